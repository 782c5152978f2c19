"""Band-limited resampling of a whole clip (FFT), e.g. TTS audio at 22.05/24 kHz to ASR's 16 kHz.
For offline clips and tests; the realtime path streams at the TTS rate and never resamples."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def resample(audio: npt.NDArray[Any], src_rate: int, dst_rate: int) -> npt.NDArray[np.float32]:
    if src_rate == dst_rate or audio.size == 0:
        return audio.astype(np.float32)
    n_out = round(audio.size * dst_rate / src_rate)
    spectrum = np.fft.rfft(audio.astype(np.float64))
    keep = n_out // 2 + 1
    if keep <= spectrum.size:
        spectrum = spectrum[:keep]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(keep - spectrum.size, dtype=complex)])
    out = np.fft.irfft(spectrum, n_out) * (n_out / audio.size)
    return out.astype(np.float32)
