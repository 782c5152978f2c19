"""Models layer: VAD, ASR, LLM and TTS behind small protocols, with fakes (issue 3)."""
