// Baseline AArch64 NEON table ("neon"): every ARMv8-A core has it.
#define PYRT_NEON_TABLE_FN neon_kernels
#define PYRT_NEON_TABLE_NAME "neon"
#include "backends/cpu/kernels_neon.inc"
