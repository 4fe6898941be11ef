"""How the network is loaded and run: the ASR object (`asr`), the backend policy (`backend`), key/value
caches, decoding, the compiled one-token step, overflow checks, and the Linux BLAS / platform detection."""
