// Shared by the C++ CPU kernels and the CUDA kernels: one definition of the per-element math.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define YY_HD __host__ __device__ __forceinline__
#else
#define YY_HD inline
#endif
