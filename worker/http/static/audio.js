// The page's audio graph: microphone -> capture worklet (16 kHz PCM16 frames for the socket),
// and playback worklet -> speakers (examiner PCM16 at the TTS rate, flushable at once).
// Both worklets run on the audio thread, so a busy page never glitches capture or playback.

// Opens the microphone (echo cancellation matters: the examiner's voice must not come back
// as the student's answer) and returns {ctx, play(pcm, rate), flush(), stopMic()}.
// getUserMedia's errors (NotAllowedError when the microphone is denied, ...) propagate.
export async function openAudio(onFrame, onPlayback) {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
  });
  const ctx = new AudioContext({ latencyHint: 'interactive' });
  try {
    await ctx.audioWorklet.addModule('/static/capture-worklet.js');
    await ctx.audioWorklet.addModule('/static/playback-worklet.js');
  } catch (err) {
    stream.getTracks().forEach((t) => t.stop()); // do not leave the microphone on for nothing
    ctx.close();
    throw err;
  }
  const capture = new AudioWorkletNode(ctx, 'capture-processor', { numberOfOutputs: 1 });
  // A silent path to the destination keeps the capture node pulled by the graph.
  const mute = new GainNode(ctx, { gain: 0 });
  ctx.createMediaStreamSource(stream).connect(capture).connect(mute).connect(ctx.destination);
  const playback = new AudioWorkletNode(ctx, 'playback-processor', {
    numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
  });
  playback.connect(ctx.destination);
  capture.port.onmessage = (e) => onFrame(e.data);
  playback.port.onmessage = (e) => onPlayback(e.data);
  await ctx.resume();
  return {
    ctx,
    play(pcm, rate) {
      const ints = new Int16Array(pcm);
      const samples = new Float32Array(ints.length);
      for (let i = 0; i < ints.length; i++) samples[i] = ints[i] / 32768;
      playback.port.postMessage({ type: 'audio', samples, rate }, [samples.buffer]);
    },
    flush() { playback.port.postMessage({ type: 'flush' }); },
    stopMic() {
      capture.port.postMessage({ type: 'stop' });
      stream.getTracks().forEach((t) => t.stop());
    },
  };
}
