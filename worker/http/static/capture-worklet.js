// Microphone capture on the audio thread: downmix to mono, resample from the context's rate
// to 16 kHz with a windowed-sinc low-pass (speech above 8 kHz would otherwise fold back as
// noise the ASR hears), convert to PCM16LE and post frames of FRAME_SAMPLES to the main
// thread, which sends each one as a binary WebSocket frame (docs/protocol.md, "Audio").

const OUT_RATE = 16000;
const FRAME_SAMPLES = 512; // 32 ms at 16 kHz: the server's VAD chunk, within the 20-100 ms sweet spot
const HALF_TAPS = 8; // filter half-width in output samples: sharper when larger, and slower
const PHASES = 64; // fractional positions tabulated: the filter is never computed per sample

class Resampler {
  constructor(inRate, outRate) {
    this.step = inRate / outRate; // input samples per output sample
    // Cut a little below the output Nyquist so the transition band stays clear of aliasing.
    const cutoff = Math.min(1, outRate / inRate) * 0.45; // cycles per input sample
    this.half = Math.ceil(HALF_TAPS * Math.max(1, this.step)); // half-width in input samples
    this.table = [];
    for (let p = 0; p < PHASES; p++) {
      const taps = new Float32Array(2 * this.half);
      for (let j = 0; j < taps.length; j++) {
        taps[j] = kernel(j - this.half + 1 - p / PHASES, cutoff, this.half);
      }
      this.table.push(taps);
    }
    this.buf = new Float32Array(4096);
    this.len = 0;
    this.pos = this.half; // input position of the next output sample (relative to buf[0])
  }

  push(input, out) {
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array((this.len + input.length) * 2);
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
    while (Math.floor(this.pos) + this.half < this.len) {
      const centre = Math.floor(this.pos);
      const taps = this.table[Math.floor((this.pos - centre) * PHASES)];
      const first = centre - this.half + 1;
      let acc = 0;
      for (let j = 0; j < taps.length; j++) acc += this.buf[first + j] * taps[j];
      out.push(acc);
      this.pos += this.step;
    }
    // Keep only what the next outputs still need.
    const drop = Math.floor(this.pos) - this.half;
    if (drop > 0) {
      this.buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.pos -= drop;
    }
  }
}

// Blackman-windowed sinc low-pass at distance t (input samples) from the output instant.
function kernel(t, cutoff, half) {
  if (Math.abs(t) >= half) return 0;
  const x = 2 * cutoff * t;
  const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
  const w = 0.42 + 0.5 * Math.cos((Math.PI * t) / half) + 0.08 * Math.cos((2 * Math.PI * t) / half);
  return 2 * cutoff * sinc * w;
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    // `sampleRate` is the AudioWorkletGlobalScope's: the context's rate (44.1 or 48 kHz, ...).
    this.resampler = sampleRate === OUT_RATE ? null : new Resampler(sampleRate, OUT_RATE);
    this.pending = [];
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.filled = 0;
    this.peak = 0;
    this.active = true;
    this.port.onmessage = (e) => {
      if (e.data && e.data.type === 'stop') this.active = false;
    };
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0 && input[0].length > 0) {
      let mono = input[0];
      if (input.length > 1) {
        mono = new Float32Array(input[0].length);
        for (const ch of input) for (let i = 0; i < ch.length; i++) mono[i] += ch[i] / input.length;
      }
      this.pending.length = 0;
      if (this.resampler) this.resampler.push(mono, this.pending);
      else for (let i = 0; i < mono.length; i++) this.pending.push(mono[i]);
      for (const s of this.pending) this.append(s);
    }
    return this.active;
  }

  append(sample) {
    const clamped = Math.max(-1, Math.min(1, sample));
    this.peak = Math.max(this.peak, Math.abs(clamped));
    this.frame[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    if (this.filled === FRAME_SAMPLES) {
      // Int16Array is little-endian on every platform browsers run on, as PCM16LE needs.
      const buffer = this.frame.buffer;
      this.port.postMessage({ type: 'frame', buffer, peak: this.peak }, [buffer]);
      this.frame = new Int16Array(FRAME_SAMPLES);
      this.filled = 0;
      this.peak = 0;
    }
  }
}

registerProcessor('capture-processor', CaptureProcessor);
