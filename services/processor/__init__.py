"""The processor: samples completed requests and has LLM judges score them (docs/processor.md)."""
