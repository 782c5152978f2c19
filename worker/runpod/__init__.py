"""The RunPod front door: the serverless handler and its runtime thread, job inputs and audio
decoding, and the job actions (`evaluate`, `viva`, `session`, `health`)."""
