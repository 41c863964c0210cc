// llama.cpp's tensor element types: ids, block layouts, byte sizes, conversions.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace pyrt {

// Values are the on-disk ids of ggml_type; they never change.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
};

struct TypeTraits {
  const char* name;
  int block_size;   // elements per block
  int block_bytes;  // bytes per block
  bool computable;  // the runtime has kernels for it
};

// nullptr for ids that are not known ggml types.
const TypeTraits* type_traits(uint32_t type_id);
const TypeTraits& type_traits(GgmlType type);
std::string type_name(uint32_t type_id);
// Bytes for a row of n elements (n must be a multiple of the block size).
size_t row_bytes(GgmlType type, int64_t n);

constexpr int kQK8_0 = 32;
constexpr int kQK4_0 = 32;
constexpr int kQK4_1 = 32;

#pragma pack(push, 1)
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK8_0];
};
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK4_0 / 2];
};
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK4_1 / 2];
};
#pragma pack(pop)
static_assert(sizeof(BlockQ8_0) == 34, "q8_0 block is 34 bytes");
static_assert(sizeof(BlockQ4_0) == 18, "q4_0 block is 18 bytes");
static_assert(sizeof(BlockQ4_1) == 20, "q4_1 block is 20 bytes");

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);  // round to nearest even, like ggml/F16C
inline float bf16_to_fp32(uint16_t h) {
  union {
    uint32_t u;
    float f;
  } v{static_cast<uint32_t>(h) << 16};
  return v.f;
}

// Dequantize n elements (a whole number of blocks) of `type` to float.
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);
// ggml's reference quantizers (quantize_row_*_ref), byte-identical to llama.cpp.
void quantize_row_q8_0(const float* src, BlockQ8_0* dst, int64_t n);
void quantize_row_q4_0(const float* src, BlockQ4_0* dst, int64_t n);
void quantize_row_q4_1(const float* src, BlockQ4_1* dst, int64_t n);

}  // namespace pyrt
