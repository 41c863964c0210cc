// Audio front end for speech models: band-limited resampling and Whisper's log-mel spectrogram.
#pragma once
#include <cstdint>
#include <vector>

#include "pyrt/threadpool.h"

namespace pyrt {

// Windowed-sinc resampling of mono audio (low-pass at the lower Nyquist rate when downsampling).
std::vector<float> resample(const float* x, int64_t n, int from_hz, int to_hz);

struct LogMelOptions {
  int n_fft = 400;      // 25 ms at 16 kHz
  int hop = 160;        // 10 ms
  int n_frames = 3000;  // 30 s window: audio is zero-padded or cut to n_frames * hop samples
};

// Whisper's features (HF WhisperFeatureExtractor): periodic Hann window, centred frames with reflect
// padding, power spectrum, mel filters [n_mels][n_fft/2+1], log10 with a 1e-10 floor, dynamic range
// clamped to 8 (log10 units) below the maximum, then (x + 4) / 4. Returns [n_mels, n_frames].
std::vector<float> whisper_log_mel(const float* pcm, int64_t n, const float* filters, int n_mels,
                                   const LogMelOptions& opt, ThreadPool& pool);

}  // namespace pyrt
