// Chunked prefill for every decoder (SPEC 5.4): prompts cut into static-shape chunks of
// PrefillOptions::chunk rows, the last one padded. Without a delegate each chunk is one CPU pass; with
// one, the model's graph becomes a task graph per chunk: every linear group the graph declares runs as
// W8A8 graphs on the delegate, its input-outlier corrections and everything between linears (norms,
// RoPE, attention, residuals) on the CPU, chunks overlapping out of order. No model file takes part.
#pragma once
#include <memory>

#include "models/decoder.h"

namespace pyrt {

// Installs the plan the model's options ask for (nothing without a chunk size).
void install_prefill_plan(DecoderModel& m);

}  // namespace pyrt
