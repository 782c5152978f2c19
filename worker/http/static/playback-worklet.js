// Examiner audio on the audio thread: a queue of chunks at the TTS rate, played back to back
// (gapless) and resampled to the context's rate by linear interpolation. `flush` drops every
// queued sample at once (barge-in: none of a cancelled response may be heard).
//
// Messages in:  {type: 'audio', samples: Float32Array, rate}  |  {type: 'flush'}
// Messages out: {type: 'state', playing, framesPlayed, bufferedMs}  on every start/stop/flush,
//               and about every 100 ms while playing (framesPlayed counts output frames).

const REPORT_EVERY = 8; // render quanta of 128 frames between progress reports (~21 ms each)

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // Float32Array chunks at `this.rate`
    this.idx = 0; // sample index in queue[0]
    this.frac = 0; // fractional position between queue[0][idx] and the next sample
    this.rate = sampleRate;
    this.step = 1; // source samples per output frame
    this.queued = 0; // source samples queued (for bufferedMs)
    this.playing = false;
    this.framesPlayed = 0;
    this.quanta = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    if (msg.type === 'audio' && msg.samples.length > 0) {
      if (msg.rate !== this.rate) {
        this.rate = msg.rate;
        this.step = msg.rate / sampleRate;
      }
      this.queue.push(msg.samples);
      this.queued += msg.samples.length;
    } else if (msg.type === 'flush') {
      this.queue = [];
      this.idx = 0;
      this.frac = 0;
      this.queued = 0;
      this.setPlaying(false, true);
    }
  }

  setPlaying(playing, force = false) {
    if (playing === this.playing && !force) return;
    this.playing = playing;
    this.report();
  }

  report() {
    this.port.postMessage({
      type: 'state',
      playing: this.playing,
      framesPlayed: this.framesPlayed,
      bufferedMs: (1000 * this.queued) / this.rate,
    });
  }

  // The sample after the current one, possibly the first of the next chunk; when none has
  // arrived yet, hold the current one (the server paces with a lead, so this is rare).
  next(current) {
    const chunk = this.queue[0];
    if (this.idx + 1 < chunk.length) return chunk[this.idx + 1];
    return this.queue.length > 1 ? this.queue[1][0] : current;
  }

  process(_inputs, outputs) {
    const out = outputs[0];
    const ch0 = out[0];
    let written = 0;
    while (written < ch0.length && this.queue.length > 0) {
      const chunk = this.queue[0];
      const a = chunk[this.idx];
      ch0[written++] = a + (this.next(a) - a) * this.frac;
      this.frac += this.step;
      while (this.frac >= 1 && this.queue.length > 0) {
        this.frac -= 1;
        this.idx += 1;
        this.queued -= 1;
        if (this.idx >= this.queue[0].length) {
          this.queue.shift();
          this.idx = 0;
        }
      }
    }
    ch0.fill(0, written);
    for (let c = 1; c < out.length; c++) out[c].set(ch0);
    this.framesPlayed += written;
    this.setPlaying(this.queue.length > 0 || written === ch0.length);
    if (this.playing && ++this.quanta % REPORT_EVERY === 0) this.report();
    return true;
  }
}

registerProcessor('playback-processor', PlaybackProcessor);
