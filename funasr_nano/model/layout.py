"""Every key and shape of the official Fun-ASR-Nano ``model.pt`` state dict, from the two configs.

Shapes are PyTorch's (``Linear.weight`` is ``[out, in]``, the FSMN depthwise conv is
``[C, 1, K]``). Keys are listed in module registration order, as ``torch.save`` writes them.
"""

from __future__ import annotations


def _encoder_layer(prefix: str, d_in: int, d: int, ffn: int, kernel: int) -> dict:
    # EncoderLayerSANM registers self_attn (linear_out, linear_q_k_v, fsmn_block), feed_forward,
    # norm1, norm2.
    return {
        f"{prefix}self_attn.linear_out.weight": (d, d),
        f"{prefix}self_attn.linear_out.bias": (d,),
        f"{prefix}self_attn.linear_q_k_v.weight": (3 * d, d_in),
        f"{prefix}self_attn.linear_q_k_v.bias": (3 * d,),
        f"{prefix}self_attn.fsmn_block.weight": (d, 1, kernel),
        f"{prefix}feed_forward.w_1.weight": (ffn, d),
        f"{prefix}feed_forward.w_1.bias": (ffn,),
        f"{prefix}feed_forward.w_2.weight": (d, ffn),
        f"{prefix}feed_forward.w_2.bias": (d,),
        f"{prefix}norm1.weight": (d_in,),
        f"{prefix}norm1.bias": (d_in,),
        f"{prefix}norm2.weight": (d,),
        f"{prefix}norm2.bias": (d,),
    }


def _transformer_block(prefix: str, d: int, ffn: int) -> dict:
    # funasr.models.transformer EncoderLayer: self_attn (linear_q/k/v/out), feed_forward, norm1, norm2.
    out = {}
    for name in ("linear_q", "linear_k", "linear_v", "linear_out"):
        out[f"{prefix}self_attn.{name}.weight"] = (d, d)
        out[f"{prefix}self_attn.{name}.bias"] = (d,)
    out[f"{prefix}feed_forward.w_1.weight"] = (ffn, d)
    out[f"{prefix}feed_forward.w_1.bias"] = (ffn,)
    out[f"{prefix}feed_forward.w_2.weight"] = (d, ffn)
    out[f"{prefix}feed_forward.w_2.bias"] = (d,)
    for name in ("norm1", "norm2"):
        out[f"{prefix}{name}.weight"] = (d,)
        out[f"{prefix}{name}.bias"] = (d,)
    return out


def encoder_shapes(funasr_cfg: dict) -> dict[str, tuple]:
    enc = funasr_cfg["audio_encoder_conf"]
    fe = funasr_cfg.get("frontend_conf", {}) or {}
    d_in = int(fe.get("n_mels", 80)) * int(fe.get("lfr_m", 7))
    d = int(enc["output_size"])
    ffn = int(enc["linear_units"])
    kernel = int(enc["kernel_size"])
    n_blocks = int(enc["num_blocks"])
    tp_blocks = int(enc.get("tp_blocks", 0))
    p = "audio_encoder."
    out: dict[str, tuple] = {}
    out.update(_encoder_layer(f"{p}encoders0.0.", d_in, d, ffn, kernel))
    for i in range(n_blocks - 1):
        out.update(_encoder_layer(f"{p}encoders.{i}.", d, d, ffn, kernel))
    out[f"{p}after_norm.weight"] = (d,)
    out[f"{p}after_norm.bias"] = (d,)
    for i in range(tp_blocks):
        out.update(_encoder_layer(f"{p}tp_encoders.{i}.", d, d, ffn, kernel))
    out[f"{p}tp_norm.weight"] = (d,)
    out[f"{p}tp_norm.bias"] = (d,)
    return out


def adaptor_shapes(funasr_cfg: dict, llm_dim: int) -> dict[str, tuple]:
    conf = funasr_cfg["audio_adaptor_conf"]
    enc_dim = int(conf.get("encoder_dim", funasr_cfg["audio_encoder_conf"]["output_size"]))
    k = int(conf.get("downsample_rate", 1))
    ffn = int(conf["ffn_dim"])
    n_layer = int(conf["n_layer"])
    p = "audio_adaptor."
    out = {
        f"{p}linear1.weight": (ffn, enc_dim * k),
        f"{p}linear1.bias": (ffn,),
        f"{p}linear2.weight": (llm_dim, ffn),
        f"{p}linear2.bias": (llm_dim,),
    }
    for i in range(n_layer):
        # block FFN hidden = llm_dim // 4 (hard-coded in funasr's adaptor), 8 heads (no weights)
        out.update(_transformer_block(f"{p}blocks.{i}.", llm_dim, llm_dim // 4))
    return out


def llm_shapes(qwen_cfg: dict) -> dict[str, tuple]:
    h = int(qwen_cfg["hidden_size"])
    n_layers = int(qwen_cfg["num_hidden_layers"])
    n_heads = int(qwen_cfg["num_attention_heads"])
    n_kv = int(qwen_cfg.get("num_key_value_heads", n_heads))
    head_dim = int(qwen_cfg.get("head_dim") or h // n_heads)
    ffn = int(qwen_cfg["intermediate_size"])
    vocab = int(qwen_cfg["vocab_size"])
    bias = bool(qwen_cfg.get("attention_bias", False))
    p = "llm.model."
    out: dict[str, tuple] = {f"{p}embed_tokens.weight": (vocab, h)}
    for i in range(n_layers):
        lp = f"{p}layers.{i}."
        out[f"{lp}self_attn.q_proj.weight"] = (n_heads * head_dim, h)
        if bias:
            out[f"{lp}self_attn.q_proj.bias"] = (n_heads * head_dim,)
        out[f"{lp}self_attn.k_proj.weight"] = (n_kv * head_dim, h)
        if bias:
            out[f"{lp}self_attn.k_proj.bias"] = (n_kv * head_dim,)
        out[f"{lp}self_attn.v_proj.weight"] = (n_kv * head_dim, h)
        if bias:
            out[f"{lp}self_attn.v_proj.bias"] = (n_kv * head_dim,)
        out[f"{lp}self_attn.o_proj.weight"] = (h, n_heads * head_dim)
        if bias:
            out[f"{lp}self_attn.o_proj.bias"] = (h,)
        out[f"{lp}self_attn.q_norm.weight"] = (head_dim,)
        out[f"{lp}self_attn.k_norm.weight"] = (head_dim,)
        out[f"{lp}mlp.gate_proj.weight"] = (ffn, h)
        out[f"{lp}mlp.up_proj.weight"] = (ffn, h)
        out[f"{lp}mlp.down_proj.weight"] = (h, ffn)
        out[f"{lp}input_layernorm.weight"] = (h,)
        out[f"{lp}post_attention_layernorm.weight"] = (h,)
    out[f"{p}norm.weight"] = (h,)
    # Stored explicitly in the release even though the embeddings are tied.
    out["llm.lm_head.weight"] = (vocab, h)
    return out


def expected_shapes(funasr_cfg: dict, qwen_cfg: dict) -> dict[str, tuple]:
    """Key -> shape of every tensor in the official state dict (encoder, adaptor, LLM; no CTC).

    The adaptor's output width is the LLM's hidden size: FunASR overrides ``audio_adaptor_conf.llm_dim``
    with the LLM embedding width, so that is what is used here too.
    """
    llm_dim = int(qwen_cfg["hidden_size"])
    out: dict[str, tuple] = {}
    out.update(encoder_shapes(funasr_cfg))
    out.update(adaptor_shapes(funasr_cfg, llm_dim))
    out.update(llm_shapes(qwen_cfg))
    return out
