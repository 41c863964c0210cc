// AArch64 NEON + SDOT ("neon-dotprod"), built with -march=armv8.2-a+dotprod for this file only and
// picked at run time when the CPU reports the feature (HWCAP_ASIMDDP).
#define PYRT_NEON_DOTPROD 1
#define PYRT_NEON_TABLE_FN neon_dotprod_kernels
#define PYRT_NEON_TABLE_NAME "neon-dotprod"
#include "backends/cpu/kernels_neon.inc"
