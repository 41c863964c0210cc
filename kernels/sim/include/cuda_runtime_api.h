// The CUDA simulator stands in for the toolkit header of this name (kernels/sim/cusim.h).
#pragma once
#include "../cusim.h"
