// Microphone audio to 16 kHz mono float32 frames of 512 samples (32 ms), posted to the page as ArrayBuffers.
// The input (the audio context's rate, often 48 kHz) is mixed to mono, low-passed below 16 kHz's Nyquist
// frequency with a windowed-sinc filter, and read at 16 kHz by linear interpolation.
const RATE = 16000, FRAME = 512, TAPS = 63;

function lowPass(cutoff) {  // cutoff as a fraction of the input rate; Blackman-windowed sinc, unit gain
  const taps = new Float32Array(TAPS), middle = (TAPS - 1) / 2;
  let sum = 0;
  for (let i = 0; i < TAPS; i++) {
    const x = i - middle;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const window = 0.42 - 0.5 * Math.cos(2 * Math.PI * i / (TAPS - 1)) + 0.08 * Math.cos(4 * Math.PI * i / (TAPS - 1));
    taps[i] = sinc * window;
    sum += taps[i];
  }
  return taps.map((tap) => tap / sum);
}

class Capture16k extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / RATE;  // input samples per output sample
    this.filter = this.step > 1 ? lowPass(0.45 / this.step) : null;
    this.history = new Float32Array(TAPS);
    this.at = 0;
    this.previous = 0;  // the last filtered input sample
    this.next = 1;      // where the next output sample lies, in input samples after `previous`
    this.frame = new Float32Array(FRAME);
    this.filled = 0;
  }

  filtered(sample) {
    if (!this.filter) return sample;
    this.history[this.at] = sample;
    this.at = (this.at + 1) % TAPS;
    let sum = 0;
    for (let k = 0; k < TAPS; k++) sum += this.filter[k] * this.history[(this.at + k) % TAPS];
    return sum;
  }

  emit(sample) {
    this.frame[this.filled++] = sample;
    if (this.filled === FRAME) {
      this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
      this.frame = new Float32Array(FRAME);
      this.filled = 0;
    }
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    for (let i = 0; i < channels[0].length; i++) {
      let mono = 0;
      for (const channel of channels) mono += channel[i];
      const current = this.filtered(mono / channels.length);
      while (this.next <= 1) {
        this.emit(this.previous + (current - this.previous) * this.next);
        this.next += this.step;
      }
      this.next -= 1;
      this.previous = current;
    }
    return true;
  }
}

registerProcessor("capture-16k", Capture16k);
