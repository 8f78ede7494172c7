// The Keras SimpleRNN recurrence: h' = tanh(xw_t + h @ R) ((h * mask) @ R under recurrent
// dropout; one mask per row). See recurrence.h for the layout, the masks and the thread split.

#include "recurrence.h"

namespace rnnjax {
namespace {

ffi::Error SimpleRnnForward(ffi::ThreadPool pool, F32Buffer xw, F32Buffer r, F32Buffer h0,
                            MaskBuffer mask, F32Buffer recurrent_masks, F32Result hs) {
  if (xw.dimensions().size() < 3) {
    return ffi::Error::InvalidArgument("simple_rnn forward: xw must be [batch, time, units]");
  }
  const Geometry shape(xw.dimensions(), r.dimensions(), 1);
  const StepMask keep(mask, shape);
  const DropoutMasks dropout(recurrent_masks, shape, 1);
  if (auto error = CheckOptionalInputs("simple_rnn forward", keep, dropout); error.failure()) {
    return error;
  }
  const int64_t time = shape.time, rows_per_model = shape.rows_per_model;
  ForEachRowChunk(pool, shape.batch, [&](int64_t first, int64_t end) {
    WithUnits(shape.units, [&](auto units_constant) {
      const int64_t units = units_constant;
      const int64_t rows = end - first;
      // One block's worth of rows past the end: a block product reads kBlockRows states.
      std::vector<float> h_rows((rows + kBlockRows) * units, 0.0f);
      std::vector<float> z(kBlockRows * units, 0.0f), scratch(kBlockRows * units);
      std::copy_n(h0.typed_data() + first * units, rows * units, h_rows.data());
      for (int64_t t = 0; t < time; ++t) {
        ForEachBlock(first, end, rows_per_model, [&](int64_t b0, int64_t count) {
          float* __restrict h = h_rows.data() + (b0 - first) * units;
          LoadStep(xw.typed_data(), b0, count, time, t, units, z.data());
          AddRecurrentProduct(h, dropout, b0, count,
                              r.typed_data() + (b0 / rows_per_model) * units * units, units,
                              units, 0, 1, scratch.data(), z.data(), units);
          TanhInPlace(z.data(), count * units);
          for (int64_t l = 0; l < count; ++l) {
            float* h_out = hs->typed_data() + ((b0 + l) * time + t) * units;
            if (keep.Keeps(b0 + l, t)) std::copy_n(&z[l * units], units, h + l * units);
            std::copy_n(h + l * units, units, h_out);
          }
        });
      }
    });
  });
  return ffi::Error::Success();
}

// Gradients of xw (dxw [B, T, U], also the gradient of h @ R) and of h0.
ffi::Error SimpleRnnBackward(ffi::ThreadPool pool, F32Buffer dhs, F32Buffer hs, F32Buffer h0,
                             F32Buffer r, MaskBuffer mask, F32Buffer recurrent_masks,
                             F32Result dxw, F32Result dh0) {
  const Geometry shape(hs.dimensions(), r.dimensions(), 1);
  const StepMask keep(mask, shape);
  const DropoutMasks dropout(recurrent_masks, shape, 1);
  if (auto error = CheckOptionalInputs("simple_rnn backward", keep, dropout); error.failure()) {
    return error;
  }
  const int64_t time = shape.time, rows_per_model = shape.rows_per_model;
  const std::vector<float> r_t = TransposeEach(r.typed_data(), shape.models, shape.units,
                                               shape.units);
  ForEachRowChunk(pool, shape.batch, [&](int64_t first, int64_t end) {
    WithUnits(shape.units, [&](auto units_constant) {
      const int64_t units = units_constant;
      const int64_t rows = end - first;
      std::vector<float> dh_rows((rows + kBlockRows) * units, 0.0f);
      std::vector<float> d(kBlockRows * units, 0.0f), scratch(kBlockRows * units);
      for (int64_t t = time - 1; t >= 0; --t) {
        ForEachBlock(first, end, rows_per_model, [&](int64_t b0, int64_t count) {
          float* __restrict dh = dh_rows.data() + (b0 - first) * units;
          for (int64_t l = 0; l < count; ++l) {
            const int64_t step = (b0 + l) * time + t;
            const float* dh_out = dhs.typed_data() + step * units;
            float* __restrict d_l = &d[l * units];
            float* __restrict dh_l = dh + l * units;
            if (!keep.Keeps(b0 + l, t)) {
              // The step copied h: its gradient passes through (the product adds zero).
              std::fill_n(d_l, units, 0.0f);
              #pragma omp simd
              for (int64_t u = 0; u < units; ++u) dh_l[u] += dh_out[u];
              continue;
            }
            const float* h_l = hs.typed_data() + step * units;
            #pragma omp simd
            for (int64_t u = 0; u < units; ++u) {
              d_l[u] = (dh_l[u] + dh_out[u]) * (1.0f - h_l[u] * h_l[u]);
              dh_l[u] = 0.0f;
            }
          }
          AddTransposedProduct(d.data(), units, dropout, b0, count,
                               r_t.data() + (b0 / rows_per_model) * units * units, units, 0, 1,
                               scratch.data(), dh);
          StoreStep(d.data(), b0, count, time, t, units, dxw->typed_data());
        });
      }
      std::copy_n(dh_rows.data(), rows * units, dh0->typed_data() + first * units);
    });
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace rnnjax

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxSimpleRnnForward, rnnjax::SimpleRnnForward,
                              rnnjax::ffi::Ffi::Bind()
                                  .Ctx<rnnjax::ffi::ThreadPool>()
                                  .Arg<rnnjax::F32Buffer>()   // xw [B, T, U]
                                  .Arg<rnnjax::F32Buffer>()   // recurrent kernel [U, U]
                                  .Arg<rnnjax::F32Buffer>()   // h0 [B, U]
                                  .Arg<rnnjax::MaskBuffer>()  // mask [B, T] or empty
                                  .Arg<rnnjax::F32Buffer>()   // recurrent masks [B, 1, U] or empty
                                  .Ret<rnnjax::F32Buffer>()   // hs [B, T, U]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxSimpleRnnBackward, rnnjax::SimpleRnnBackward,
                              rnnjax::ffi::Ffi::Bind()
                                  .Ctx<rnnjax::ffi::ThreadPool>()
                                  .Arg<rnnjax::F32Buffer>()   // dhs [B, T, U]
                                  .Arg<rnnjax::F32Buffer>()   // hs [B, T, U]
                                  .Arg<rnnjax::F32Buffer>()   // h0 [B, U]
                                  .Arg<rnnjax::F32Buffer>()   // recurrent kernel [U, U]
                                  .Arg<rnnjax::MaskBuffer>()  // mask [B, T] or empty
                                  .Arg<rnnjax::F32Buffer>()   // recurrent masks [B, 1, U] or empty
                                  .Ret<rnnjax::F32Buffer>()   // dxw [B, T, U]
                                  .Ret<rnnjax::F32Buffer>()   // dh0 [B, U]
);
