// Test-only kernels (kernels/testing/*.cuh: simulator checks, sanitizer negative controls,
// primitive checks), registered in their own modules (_cudasim_testing, _cuda_testing) so that
// they never ship in the library's extensions. Each testing header registers its kernels in a
// `#ifdef CVK_REGISTER_TEST_KERNELS` block; CMake lists the headers in testing_includes.h.
#include "registry.h"
#define CVK_REGISTER_TEST_KERNELS
#include "testing_includes.h"
