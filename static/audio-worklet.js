// Microphone capture for the Iqra voice widget (an AudioWorklet module, loaded by widget.js).
//
// The audio graph runs at the device's rate (often 48 kHz) because browsers refuse to connect a
// microphone to a context of another rate; the platform wants the session's input rate, so the
// resampling happens here, off the main thread. Each 20 ms of output becomes one little-endian PCM16
// frame posted (transferred, not copied) to the main thread, which sends it as one WebSocket message.

class IqraCaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 16000;
    const frameMs = opts.frameMs || 20;
    this.frameSamples = Math.max(1, Math.round((this.targetRate * frameMs) / 1000));
    // Input samples per output sample; `sampleRate` is the context's rate (a worklet global).
    this.ratio = sampleRate / this.targetRate;
    // Averaging over one output period is a cheap low-pass, so downsampling does not fold
    // the band above the new Nyquist frequency straight back into speech.
    this.half = this.ratio > 1 ? (this.ratio - 1) / 2 : 0;
    this.buffer = new Float32Array(0);
    this.position = 0;
    this.newFrame();
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === "stop") this.running = false;
    };
  }

  newFrame() {
    this.frame = new ArrayBuffer(this.frameSamples * 2);
    this.view = new DataView(this.frame);
    this.filled = 0;
  }

  push(value) {
    const clamped = value > 1 ? 1 : value < -1 ? -1 : value;
    const sample = clamped < 0 ? Math.round(clamped * 32768) : Math.round(clamped * 32767);
    this.view.setInt16(this.filled * 2, sample, true);
    this.filled += 1;
    if (this.filled === this.frameSamples) {
      this.port.postMessage(this.frame, [this.frame]);
      this.newFrame();
    }
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!this.running) return false;
    if (!channel || channel.length === 0) return true;

    const joined = new Float32Array(this.buffer.length + channel.length);
    joined.set(this.buffer, 0);
    joined.set(channel, this.buffer.length);
    const data = joined;
    const ratio = this.ratio;
    const half = this.half;
    let pos = this.position;

    while (pos + half + 1 < data.length) {
      let value;
      if (ratio > 1) {
        const first = Math.max(0, Math.ceil(pos - half));
        const last = Math.floor(pos + half);
        let sum = 0;
        for (let i = first; i <= last; i += 1) sum += data[i];
        value = sum / (last - first + 1);
      } else {
        const i = Math.floor(pos);
        const fraction = pos - i;
        value = data[i] + (data[i + 1] - data[i]) * fraction;
      }
      this.push(value);
      pos += ratio;
    }

    // Keep only what the next output samples still look at.
    const drop = Math.max(0, Math.min(data.length, Math.floor(pos - half) - 1));
    this.buffer = data.slice(drop);
    this.position = pos - drop;
    return true;
  }
}

registerProcessor("iqra-capture", IqraCaptureProcessor);
