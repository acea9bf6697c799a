"""Kernel-backed implementations of ops, registered with the sim, cuda and rawkernel backends."""
