"""Offline converters: HF folders / GGUF -> runtime GGUF, with quantization.

They may use optional packages (``gguf``, ``tqdm``); the runtime never imports this package.
"""
