// The same kernels, compiled by g++ for the CPU simulator (-DCVK_SIM).
#include "instantiate.h"
