// The kernels, compiled by nvcc for the GPU.
#include "instantiate.h"
