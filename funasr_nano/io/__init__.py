"""User-facing audio input and transcript output: decoding/resampling, long-audio segmentation,
batching by seconds of audio, output formats, and the one long-audio path (`longform`)."""
