"""The reference's ChatML prompt, instruction variants and text post-processing."""

from __future__ import annotations

import re
from dataclasses import dataclass

SYSTEM_PROMPT = "You are a helpful assistant."
AUDIO_PLACEHOLDER_ID = 0  # the reference fills the speech span with id 0, then overwrites the rows

# Language names are the Chinese strings the model was trained with. Fun-ASR-Nano knows the
# first three; Fun-ASR-MLT-Nano all of them. Short codes follow FunASR's own alias table.
LANGUAGES = (
    "中文", "英文", "日文", "粤语", "韩文", "越南语", "印尼语", "泰语", "马来语", "菲律宾语", "阿拉伯语",
    "印地语", "保加利亚语", "克罗地亚语", "捷克语", "丹麦语", "荷兰语", "爱沙尼亚语", "芬兰语", "希腊语",
    "匈牙利语", "爱尔兰语", "拉脱维亚语", "立陶宛语", "马耳他语", "波兰语", "葡萄牙语", "罗马尼亚语",
    "斯洛伐克语", "斯洛文尼亚语", "瑞典语",
)
LANGUAGE_ALIASES = {"zh": "中文", "en": "英文", "ja": "日文", "ko": "韩文", "yue": "粤语"}


def resolve_language(language: str | None) -> str | None:
    if language is None or language == "" or str(language).lower() == "auto":
        return None
    if language in LANGUAGES:
        return language
    alias = LANGUAGE_ALIASES.get(str(language).lower())
    if alias:
        return alias
    raise ValueError(
        f"unknown language {language!r}: use None/'auto', a code {sorted(LANGUAGE_ALIASES)} "
        f"or one of the model's language names {list(LANGUAGES)}"
    )


def instruction(hotwords=None, language: str | None = None, itn: bool = True) -> str:
    """The user instruction that precedes the audio (the reference's `get_prompt`)."""
    if isinstance(hotwords, str):
        hotwords = [hotwords]
    hotwords = [h for h in (hotwords or []) if h]
    if hotwords:
        text = ("请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。\n\n\n**上下文信息：**\n\n\n"
                f"热词列表：[{', '.join(hotwords)}]\n")
    else:
        text = ""
    language = resolve_language(language)
    text += "语音转写" if language is None else f"语音转写成{language}"
    if not itn:
        text += "，不进行文本规整"
    return text + "："


@dataclass(frozen=True)
class Prompt:
    """Token ids around the audio: ids = prefix + [0] * n_audio + suffix."""

    prefix: tuple
    suffix: tuple
    n_audio: int

    @property
    def ids(self) -> list[int]:
        return list(self.prefix) + [AUDIO_PLACEHOLDER_ID] * self.n_audio + list(self.suffix)

    @property
    def audio_start(self) -> int:
        return len(self.prefix)

    def __len__(self) -> int:
        return len(self.prefix) + self.n_audio + len(self.suffix)


def build_prompt(tokenizer, n_audio: int, language=None, hotwords=None, itn=True, prev_text: str = "") -> Prompt:
    """Tokenise the text before and after the speech span separately, as the reference does."""
    before = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{instruction(hotwords, language, itn)}"
    after = "<|im_end|>\n<|im_start|>assistant\n" + (prev_text or "")
    return Prompt(tuple(tokenizer.encode(before)), tuple(tokenizer.encode(after)), int(n_audio))


def stable_text(raw: str) -> str:
    """The part of `postprocess(raw)[0]` that no later text can change, for streaming: `raw` with
    a trailing partial "/sil" held back, post-processed, trailing whitespace dropped (it may still
    merge with what follows). Always a prefix of the post-processed text of any continuation."""
    for n in (3, 2, 1):
        if raw.endswith("/sil"[:n]):
            raw = raw[:-n]
            break
    return postprocess(raw)[0].rstrip()


def postprocess(response: str, prev_text: str = "") -> tuple[str, str]:
    """(text, text_tn) exactly as the reference derives them from the decoded tokens."""
    response = (prev_text or "") + response
    text = re.sub(r"\s+", " ", response.replace("/sil", " "))
    text_tn = re.sub(r"[^\w\s\u3000\u4e00-\u9fff]+", "", response)
    return text, text_tn
