// nvcc compiles the test-only kernels from the same file as g++.
#include "testing_kernels.cpp"
