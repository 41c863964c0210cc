#include "backends/cpu/audio.h"

#include <algorithm>
#include <cmath>

#include "backends/cpu/kernels.h"
#include "pyrt/error.h"

namespace pyrt {

namespace {
constexpr double kPi = 3.14159265358979323846;
}

std::vector<float> resample(const float* x, int64_t n, int from_hz, int to_hz) {
  if (from_hz <= 0 || to_hz <= 0) fail(ErrorCode::kInvalidArgument, "sample rates must be positive");
  if (from_hz == to_hz) return std::vector<float>(x, x + n);
  const double ratio = static_cast<double>(to_hz) / from_hz;
  const int64_t n_out = static_cast<int64_t>(std::ceil(static_cast<double>(n) * ratio));
  // Cut-off just under the lower Nyquist rate; 32 zero crossings of the sinc, Hann-windowed.
  const double cutoff = std::min(1.0, ratio) * 0.97;
  constexpr int kZeroCrossings = 32;
  const double half_width = kZeroCrossings / cutoff;  // in input samples
  std::vector<float> out(static_cast<size_t>(n_out));
  for (int64_t i = 0; i < n_out; ++i) {
    const double center = static_cast<double>(i) / ratio;
    const int64_t j0 = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(center - half_width)));
    const int64_t j1 = std::min<int64_t>(n - 1, static_cast<int64_t>(std::floor(center + half_width)));
    double acc = 0;
    for (int64_t j = j0; j <= j1; ++j) {
      const double d = center - static_cast<double>(j);
      const double arg = cutoff * d;
      const double sinc = std::abs(arg) < 1e-12 ? 1.0 : std::sin(kPi * arg) / (kPi * arg);
      const double window = 0.5 + 0.5 * std::cos(kPi * d / half_width);
      acc += x[j] * cutoff * sinc * window;
    }
    out[i] = static_cast<float>(acc);
  }
  return out;
}

std::vector<float> whisper_log_mel(const float* pcm, int64_t n, const float* filters, int n_mels,
                                   const LogMelOptions& opt, ThreadPool& pool) {
  const int n_fft = opt.n_fft, hop = opt.hop, n_freq = n_fft / 2 + 1;
  const int64_t n_samples = int64_t(opt.n_frames) * hop;
  // Zero-pad / cut to the window, then reflect-pad n_fft/2 on both sides (torch.stft center=True).
  std::vector<float> audio(static_cast<size_t>(n_samples), 0.0f);
  std::copy(pcm, pcm + std::min(n, n_samples), audio.begin());
  const int half = n_fft / 2;
  std::vector<float> padded(static_cast<size_t>(n_samples + 2 * half));
  for (int64_t i = 0; i < n_samples + 2 * half; ++i) {
    int64_t src = i - half;
    if (src < 0) src = -src;
    if (src >= n_samples) src = 2 * (n_samples - 1) - src;
    padded[i] = audio[src];
  }
  std::vector<float> window(n_fft), cos_t(static_cast<size_t>(n_freq) * n_fft), sin_t(cos_t.size());
  for (int i = 0; i < n_fft; ++i)
    window[i] = static_cast<float>(0.5 - 0.5 * std::cos(2 * kPi * i / n_fft));  // periodic
  for (int f = 0; f < n_freq; ++f) {
    for (int i = 0; i < n_fft; ++i) {
      const double a = 2 * kPi * static_cast<double>((int64_t(f) * i) % n_fft) / n_fft;
      cos_t[f * n_fft + i] = static_cast<float>(std::cos(a));
      sin_t[f * n_fft + i] = static_cast<float>(std::sin(a));
    }
  }
  const cpu::KernelTable& k = cpu::kernels();
  std::vector<float> mel(static_cast<size_t>(n_mels) * opt.n_frames);
  pool.run(opt.n_frames, [&](int64_t t) {
    thread_local std::vector<float> frame, power;
    frame.resize(n_fft);
    power.resize(n_freq);
    const float* src = padded.data() + t * hop;
    for (int i = 0; i < n_fft; ++i) frame[i] = src[i] * window[i];
    for (int f = 0; f < n_freq; ++f) {
      const float re = k.dot_f32(frame.data(), &cos_t[f * n_fft], n_fft);
      const float im = k.dot_f32(frame.data(), &sin_t[f * n_fft], n_fft);
      power[f] = re * re + im * im;
    }
    for (int m = 0; m < n_mels; ++m) {
      const float e = k.dot_f32(power.data(), filters + int64_t(m) * n_freq, n_freq);
      mel[int64_t(m) * opt.n_frames + t] = std::log10(std::max(e, 1e-10f));
    }
  });
  const float top = *std::max_element(mel.begin(), mel.end());
  for (float& v : mel) v = (std::max(v, top - 8.0f) + 4.0f) / 4.0f;
  return mel;
}

}  // namespace pyrt
