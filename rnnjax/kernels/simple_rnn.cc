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
      std::vector<float> h_rows(rows * units);
      std::copy_n(h0.typed_data() + first * units, rows * units, h_rows.data());
      for (int64_t t = 0; t < time; ++t) {
        for (int64_t b = first; b < end; ++b) {
          float* __restrict h = h_rows.data() + (b - first) * units;
          const int64_t step = b * time + t;
          float* __restrict h_out = hs->typed_data() + step * units;
          if (keep.Keeps(b, t)) {
            const float* kernel = r.typed_data() + (b / rows_per_model) * units * units;
            RecurrentProduct(h, dropout.Row(b), kernel, xw.typed_data() + step * units, units,
                             units, 0, units, h_out);
            TanhInPlace(h_out, units);
            std::copy_n(h_out, units, h);
          } else {
            std::copy_n(h, units, h_out);
          }
        }
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
      std::vector<float> dh_rows(rows * units, 0.0f), scratch(units);
      for (int64_t t = time - 1; t >= 0; --t) {
        for (int64_t b = first; b < end; ++b) {
          float* __restrict dh = dh_rows.data() + (b - first) * units;
          const int64_t step = b * time + t;
          const float* dh_out = dhs.typed_data() + step * units;
          float* __restrict dx = dxw->typed_data() + step * units;
          if (!keep.Keeps(b, t)) {
            std::fill_n(dx, units, 0.0f);
            #pragma omp simd
            for (int64_t u = 0; u < units; ++u) dh[u] += dh_out[u];
            continue;
          }
          const float* h = hs.typed_data() + step * units;
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            dx[u] = (dh[u] + dh_out[u]) * (1.0f - h[u] * h[u]);
          }
          std::fill(dh, dh + units, 0.0f);
          const float* kernel_t = r_t.data() + (b / rows_per_model) * units * units;
          AddTransposedProduct(dx, dropout.Row(b), kernel_t, units, 0, units, scratch.data(), dh);
        }
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
