// What the fused CPU recurrences (lstm.cc, gru.cc, simple_rnn.cc) share: the activations, the
// row-times-matrix loops, the sizes of a call, the optional padding and recurrent-dropout masks,
// and the split of rows over XLA's thread pool. rnnjax/fused.py compiles the kernels on first use
// and calls them as XLA FFI custom calls.
//
// Why kernels: XLA:CPU runs one timestep of a scanned cell as a few dozen tiny kernels on
// [batch, units] arrays, and that per-kernel cost, not arithmetic, bounds small recurrent models.
// Here a whole sequence is one loop per batch row, forward and backward.
//
// Layout is batch-major, as the layer produces it: x-projections [B, T, G*U], outputs [B, T, U].
// The time loop is outermost and the rows inside it, so consecutive iterations are independent
// rows the CPU overlaps (one row alone is latency-bound). Rows are split over XLA's intra-op thread
// pool; results do not depend on the split. Only the recurrence runs here: the input projection
// x @ W + b, the weight gradients (one einsum over all timesteps) and everything else stay in XLA.
//
// Optional inputs are buffers that are empty when absent:
// * mask [B, T] bool, False at padding: the state is carried unchanged through that step and the
//   step's output repeats the previous output (Keras' mask_zero); the backward pass passes the
//   state gradient straight through it and gives the step's pre-activations zero gradient.
// * recurrent dropout masks [B, G, U] (G masks per row, one per gate; Keras' implementation 1):
//   gate g multiplies the previous state by mask g before its recurrent matmul.

#ifndef RNNJAX_KERNELS_RECURRENCE_H_
#define RNNJAX_KERNELS_RECURRENCE_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace rnnjax {

namespace ffi = xla::ffi;

using F32Buffer = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;
using MaskBuffer = ffi::Buffer<ffi::PRED>;

#define RNNJAX_INLINE inline __attribute__((always_inline))

// exp(x): Cody-Waite reduction by ln 2 and a degree-5 polynomial (the Cephes expf coefficients),
// about 1 ulp on the clamped range. Branch-free, so GCC vectorises every loop that calls it
// without -ffast-math (which would also license rewrites we do not want). NaN stays NaN.
RNNJAX_INLINE float Exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float kShifter = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to integer
  const float n = (x * 1.44269504088896341f + kShifter) - kShifter;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

RNNJAX_INLINE float Sigmoid(float x) { return 1.0f / (1.0f + Exp(-x)); }

RNNJAX_INLINE float Tanh(float x) { return 1.0f - 2.0f / (Exp(2.0f * x) + 1.0f); }

RNNJAX_INLINE void SigmoidInPlace(float* __restrict v, int64_t n) {
  #pragma omp simd
  for (int64_t j = 0; j < n; ++j) v[j] = Sigmoid(v[j]);
}

RNNJAX_INLINE void TanhInPlace(float* __restrict v, int64_t n) {
  #pragma omp simd
  for (int64_t j = 0; j < n; ++j) v[j] = Tanh(v[j]);
}

// The recurrent matmul of one row for `columns` columns of a [units, width] matrix, starting at
// column `first`: out[0:columns] = bias[0:columns] (zero if null) + sum_k h'[k] * matrix[k, first +
// j]. Without masks h' = h. With masks (`masks[g * units + k]`, one mask per gate of `units`
// columns, the first belonging to column `first`) gate g uses h' = h * mask g.
RNNJAX_INLINE void RecurrentProduct(const float* __restrict h, const float* __restrict masks,
                                    const float* __restrict matrix, const float* __restrict bias,
                                    int64_t units, int64_t width, int64_t first, int64_t columns,
                                    float* __restrict out) {
  if (bias != nullptr) {
    std::copy(bias, bias + columns, out);
  } else {
    std::fill(out, out + columns, 0.0f);
  }
  if (masks == nullptr) {
    for (int64_t k = 0; k < units; ++k) {
      const float hk = h[k];
      const float* row = matrix + k * width + first;
      #pragma omp simd
      for (int64_t j = 0; j < columns; ++j) out[j] += hk * row[j];
    }
    return;
  }
  // One gate at a time: for 8 units a gate is one 256-bit vector, the same vector count as the
  // unmasked loop over all columns.
  for (int64_t g = 0; g * units < columns; ++g) {
    const float* mask = masks + g * units;
    float* gate_out = out + g * units;
    for (int64_t k = 0; k < units; ++k) {
      const float hk = h[k] * mask[k];
      const float* row = matrix + k * width + first + g * units;
      #pragma omp simd
      for (int64_t j = 0; j < units; ++j) gate_out[j] += hk * row[j];
    }
  }
}

// The transpose of RecurrentProduct: out[0:units] += d[0:columns] @ matrix[:, first:first +
// columns]^T, read from `transposed` = matrix^T [width, units]. With masks, gate g's share is
// multiplied by mask g (`scratch` holds it: `units` floats).
RNNJAX_INLINE void AddTransposedProduct(const float* __restrict d, const float* __restrict masks,
                                        const float* __restrict transposed, int64_t units,
                                        int64_t first, int64_t columns,
                                        float* __restrict scratch, float* __restrict out) {
  if (masks == nullptr) {
    for (int64_t j = 0; j < columns; ++j) {
      const float dj = d[j];
      const float* row = transposed + (first + j) * units;
      #pragma omp simd
      for (int64_t k = 0; k < units; ++k) out[k] += dj * row[k];
    }
    return;
  }
  for (int64_t g = 0; g * units < columns; ++g) {
    std::fill(scratch, scratch + units, 0.0f);
    for (int64_t j = g * units; j < (g + 1) * units; ++j) {
      const float dj = d[j];
      const float* row = transposed + (first + j) * units;
      #pragma omp simd
      for (int64_t k = 0; k < units; ++k) scratch[k] += dj * row[k];
    }
    const float* mask = masks + g * units;
    #pragma omp simd
    for (int64_t k = 0; k < units; ++k) out[k] += mask[k] * scratch[k];
  }
}

// Calls body(units) with units a compile-time constant for the common sizes, so the short
// per-row loops compile to straight vector code; other sizes run the same code with runtime loops.
template <typename Body>
void WithUnits(int64_t units, Body&& body) {
  switch (units) {
    case 8: return body(std::integral_constant<int64_t, 8>{});
    case 16: return body(std::integral_constant<int64_t, 16>{});
    case 32: return body(std::integral_constant<int64_t, 32>{});
    case 64: return body(std::integral_constant<int64_t, 64>{});
    case 128: return body(std::integral_constant<int64_t, 128>{});
    default: return body(units);
  }
}

// Under jax.vmap (K models at once) every operand gains the same leading axes, so a buffer is
// [..., B, T, G] and the weights [..., U, G]: the kernels see leading-axes x B rows, and row b
// uses the weights of model b / (rows per model).
template <typename Dims>
int64_t Product(const Dims& dims, size_t trailing) {
  int64_t product = 1;
  for (size_t i = 0; i + trailing < dims.size(); ++i) product *= dims[i];
  return product;
}

template <typename Dims>
bool IsSequenceOfGates(const Dims& dims, int64_t gates) {
  return dims.size() >= 3 && dims.back() % gates == 0;
}

// The sizes every kernel works with: `batch` rows (leading axes x batch), `time` steps, `units`
// (the last axis of `dims` is gates x units) and `models` weight sets, `rows_per_model` rows each.
struct Geometry {
  int64_t batch, time, units, models, rows_per_model;

  template <typename Dims, typename WeightDims>
  Geometry(const Dims& dims, const WeightDims& weight_dims, int64_t gates)
      : batch(Product(dims, 2)),
        time(dims[dims.size() - 2]),
        units(dims.back() / gates),
        models(Product(weight_dims, 2)),
        rows_per_model(batch / models) {}
};

// The optional padding mask: Keeps(row, t) is false where step t of the row is padding.
class StepMask {
 public:
  StepMask(const MaskBuffer& mask, const Geometry& shape)
      : data_(mask.element_count() ? mask.typed_data() : nullptr),
        time_(shape.time),
        valid_(mask.element_count() == 0 ||
               static_cast<int64_t>(mask.element_count()) == shape.batch * shape.time) {}

  bool valid() const { return valid_; }
  RNNJAX_INLINE bool Keeps(int64_t row, int64_t t) const {
    return data_ == nullptr || data_[row * time_ + t];
  }

 private:
  const bool* data_;
  int64_t time_;
  bool valid_;
};

// The optional recurrent dropout masks, [rows, gates, units]: Row(b) is row b's masks, or null.
class DropoutMasks {
 public:
  DropoutMasks(const F32Buffer& masks, const Geometry& shape, int64_t gates)
      : data_(masks.element_count() ? masks.typed_data() : nullptr),
        stride_(gates * shape.units),
        valid_(masks.element_count() == 0 ||
               static_cast<int64_t>(masks.element_count()) == shape.batch * gates * shape.units) {}

  bool valid() const { return valid_; }
  RNNJAX_INLINE const float* Row(int64_t row) const {
    return data_ == nullptr ? nullptr : data_ + row * stride_;
  }

 private:
  const float* data_;
  int64_t stride_;
  bool valid_;
};

// Checks the optional inputs' sizes against the call's geometry.
inline ffi::Error CheckOptionalInputs(const char* kernel, const StepMask& mask,
                                      const DropoutMasks& dropout) {
  if (!mask.valid()) {
    return ffi::Error::InvalidArgument(std::string(kernel) + ": mask must be empty or [B, T]");
  }
  if (!dropout.valid()) {
    return ffi::Error::InvalidArgument(std::string(kernel) +
                                       ": recurrent masks must be empty or [B, gates, units]");
  }
  return ffi::Error::Success();
}

// Each of `count` [rows, cols] matrices transposed to [cols, rows], in place order.
inline std::vector<float> TransposeEach(const float* matrices, int64_t count, int64_t rows,
                                        int64_t cols) {
  std::vector<float> out(count * rows * cols);
  for (int64_t m = 0; m < count; ++m) {
    const float* in = matrices + m * rows * cols;
    float* to = out.data() + m * rows * cols;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) to[c * rows + r] = in[r * cols + c];
  }
  return out;
}

// Runs work(first_row, end_row) over [0, rows) in chunks, on the calling thread and on XLA's
// intra-op pool. The caller also takes chunks, so it never waits on a task that has not started
// (no deadlock when the pool is busy or has one thread); tasks that start after all chunks are
// taken return at once, and the shared state outlives them.
inline void ForEachRowChunk(ffi::ThreadPool& pool, int64_t rows,
                            const std::function<void(int64_t, int64_t)>& work) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t chunks = std::min<int64_t>(rows, threads);
  if (chunks <= 1) {
    work(0, rows);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0};
    int64_t done = 0;
    std::mutex mutex;
    std::condition_variable all_done;
  };
  auto state = std::make_shared<State>();
  const auto* work_ptr = &work;
  auto run_chunks = [state, work_ptr, rows, chunks]() {
    for (int64_t chunk; (chunk = state->next.fetch_add(1)) < chunks;) {
      (*work_ptr)(chunk * rows / chunks, (chunk + 1) * rows / chunks);
      std::lock_guard<std::mutex> lock(state->mutex);
      if (++state->done == chunks) state->all_done.notify_all();
    }
  };
  for (int64_t i = 1; i < chunks; ++i) {
    auto task = run_chunks;
    pool.Schedule(std::move(task));
  }
  run_chunks();
  std::unique_lock<std::mutex> lock(state->mutex);
  state->all_done.wait(lock, [&] { return state->done == chunks; });
}

}  // namespace rnnjax

#endif  // RNNJAX_KERNELS_RECURRENCE_H_
