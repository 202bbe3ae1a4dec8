"""Energy benchmarking harness for vision-language model servers (vLLM, OpenAI API)."""

__version__ = "0.1.0"
