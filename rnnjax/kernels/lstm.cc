// The Keras LSTM recurrence, gates [i, f, c, o]:
//   z = xw_t + h @ R  (gate g: (h * mask_g) @ R_g under recurrent dropout)
//   c' = sf * c + si * tanh(z_c);  h' = so * tanh(c')   with sx = sigmoid(z_x).
// See recurrence.h for the layout, the masks and the thread split.

#include "recurrence.h"

namespace rnnjax {
namespace {

// Both activations in one form, so a whole LSTM gate row [i f c o] is one vector loop:
// sigmoid(x) = 1 / (1 + exp(-x)) and tanh(x) = 2 / (1 + exp(-2x)) - 1, i.e.
// act(x) = scale / (1 + exp(-scale * x)) + offset with (scale, offset) (1, 0) or (2, -1).
struct GateActivations {
  std::vector<float> scale, offset;

  // Sigmoid on i, f, o; tanh on the candidate c.
  explicit GateActivations(int64_t units) : scale(4 * units, 1.0f), offset(4 * units, 0.0f) {
    std::fill_n(scale.begin() + 2 * units, units, 2.0f);
    std::fill_n(offset.begin() + 2 * units, units, -1.0f);
  }

  RNNJAX_INLINE void Apply(float* __restrict z, int64_t width) const {
    const float* __restrict k = scale.data();
    const float* __restrict o = offset.data();
    #pragma omp simd
    for (int64_t j = 0; j < width; ++j) z[j] = k[j] / (1.0f + Exp(-k[j] * z[j])) + o[j];
  }
};

ffi::Error LstmForward(ffi::ThreadPool pool, F32Buffer xw, F32Buffer r, F32Buffer h0,
                       F32Buffer c0, MaskBuffer mask, F32Buffer recurrent_masks, F32Result hs,
                       F32Result cs, F32Result gates, F32Result tanh_cs) {
  if (!IsSequenceOfGates(xw.dimensions(), 4)) {
    return ffi::Error::InvalidArgument("lstm forward: xw must be [batch, time, 4 * units]");
  }
  const Geometry shape(xw.dimensions(), r.dimensions(), 4);
  const StepMask keep(mask, shape);
  const DropoutMasks dropout(recurrent_masks, shape, 4);
  if (auto error = CheckOptionalInputs("lstm forward", keep, dropout); error.failure()) {
    return error;
  }
  const int64_t time = shape.time, rows_per_model = shape.rows_per_model;
  ForEachRowChunk(pool, shape.batch, [&](int64_t first, int64_t end) {
    WithUnits(shape.units, [&](auto units_constant) {
      const int64_t units = units_constant, width = 4 * units;
      const GateActivations activations(units);
      const int64_t rows = end - first;
      std::vector<float> h_rows(rows * units), c_rows(rows * units);
      std::copy_n(h0.typed_data() + first * units, rows * units, h_rows.data());
      std::copy_n(c0.typed_data() + first * units, rows * units, c_rows.data());
      for (int64_t t = 0; t < time; ++t) {
        for (int64_t b = first; b < end; ++b) {
          float* __restrict h = h_rows.data() + (b - first) * units;
          float* __restrict c = c_rows.data() + (b - first) * units;
          const int64_t step = b * time + t;
          float* a = gates->typed_data() + step * width;
          float* __restrict c_out = cs->typed_data() + step * units;
          float* __restrict tc_out = tanh_cs->typed_data() + step * units;
          float* __restrict h_out = hs->typed_data() + step * units;
          if (!keep.Keeps(b, t)) {
            // Padding: carry the states; the backward pass reads neither gates nor tanh(c) here.
            std::fill_n(a, width, 0.0f);
            std::fill_n(tc_out, units, 0.0f);
            std::copy_n(c, units, c_out);
            std::copy_n(h, units, h_out);
            continue;
          }
          const float* kernel = r.typed_data() + (b / rows_per_model) * units * width;
          RecurrentProduct(h, dropout.Row(b), kernel, xw.typed_data() + step * width, units,
                           width, 0, width, a);
          activations.Apply(a, width);
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            c[u] = a[units + u] * c[u] + a[u] * a[2 * units + u];
            c_out[u] = c[u];
          }
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) tc_out[u] = Tanh(c[u]);
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            h[u] = a[3 * units + u] * tc_out[u];
            h_out[u] = h[u];
          }
        }
      }
    });
  });
  return ffi::Error::Success();
}

// Gradients of the pre-activations dz [B, T, 4U] and of the initial states, given the gradients
// of every output (dhs; the final h is hs[:, -1]) and of the final cell state (dc_last).
ffi::Error LstmBackward(ffi::ThreadPool pool, F32Buffer dhs, F32Buffer dc_last, F32Buffer gates,
                        F32Buffer cs, F32Buffer tanh_cs, F32Buffer c0, F32Buffer r,
                        MaskBuffer mask, F32Buffer recurrent_masks, F32Result dz, F32Result dh0,
                        F32Result dc0) {
  const Geometry shape(gates.dimensions(), r.dimensions(), 4);
  const StepMask keep(mask, shape);
  const DropoutMasks dropout(recurrent_masks, shape, 4);
  if (auto error = CheckOptionalInputs("lstm backward", keep, dropout); error.failure()) {
    return error;
  }
  const int64_t time = shape.time, rows_per_model = shape.rows_per_model;
  const std::vector<float> r_t =
      TransposeEach(r.typed_data(), shape.models, shape.units, 4 * shape.units);
  ForEachRowChunk(pool, shape.batch, [&](int64_t first, int64_t end) {
    WithUnits(shape.units, [&](auto units_constant) {
      const int64_t units = units_constant, width = 4 * units;
      const int64_t rows = end - first;
      std::vector<float> dh_rows(rows * units, 0.0f), dc_rows(rows * units), scratch(units);
      std::copy_n(dc_last.typed_data() + first * units, rows * units, dc_rows.data());
      for (int64_t t = time - 1; t >= 0; --t) {
        for (int64_t b = first; b < end; ++b) {
          float* __restrict dh = dh_rows.data() + (b - first) * units;
          float* __restrict dc = dc_rows.data() + (b - first) * units;
          const int64_t step = b * time + t;
          const float* dh_out = dhs.typed_data() + step * units;
          float* __restrict d = dz->typed_data() + step * width;
          if (!keep.Keeps(b, t)) {
            // The step copied h and c: their gradients pass through unchanged.
            std::fill_n(d, width, 0.0f);
            #pragma omp simd
            for (int64_t u = 0; u < units; ++u) dh[u] += dh_out[u];
            continue;
          }
          const float* a = gates.typed_data() + step * width;
          const float* tc = tanh_cs.typed_data() + step * units;
          const float* c_prev =
              t > 0 ? cs.typed_data() + (step - 1) * units : c0.typed_data() + b * units;
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            const float i = a[u], f = a[units + u], g = a[2 * units + u], o = a[3 * units + u];
            const float dh_u = dh[u] + dh_out[u];
            const float dc_u = dc[u] + dh_u * o * (1.0f - tc[u] * tc[u]);
            d[u] = dc_u * g * i * (1.0f - i);
            d[units + u] = dc_u * c_prev[u] * f * (1.0f - f);
            d[2 * units + u] = dc_u * i * (1.0f - g * g);
            d[3 * units + u] = dh_u * tc[u] * o * (1.0f - o);
            dc[u] = dc_u * f;
          }
          std::fill(dh, dh + units, 0.0f);
          const float* kernel_t = r_t.data() + (b / rows_per_model) * units * width;
          AddTransposedProduct(d, dropout.Row(b), kernel_t, units, 0, width, scratch.data(), dh);
        }
      }
      std::copy_n(dh_rows.data(), rows * units, dh0->typed_data() + first * units);
      std::copy_n(dc_rows.data(), rows * units, dc0->typed_data() + first * units);
    });
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace rnnjax

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxLstmForward, rnnjax::LstmForward,
                              rnnjax::ffi::Ffi::Bind()
                                  .Ctx<rnnjax::ffi::ThreadPool>()
                                  .Arg<rnnjax::F32Buffer>()   // xw [B, T, 4U]
                                  .Arg<rnnjax::F32Buffer>()   // recurrent kernel [U, 4U]
                                  .Arg<rnnjax::F32Buffer>()   // h0 [B, U]
                                  .Arg<rnnjax::F32Buffer>()   // c0 [B, U]
                                  .Arg<rnnjax::MaskBuffer>()  // mask [B, T] or empty
                                  .Arg<rnnjax::F32Buffer>()   // recurrent masks [B, 4, U] or empty
                                  .Ret<rnnjax::F32Buffer>()   // hs [B, T, U]
                                  .Ret<rnnjax::F32Buffer>()   // cs [B, T, U]
                                  .Ret<rnnjax::F32Buffer>()   // activated gates [B, T, 4U]
                                  .Ret<rnnjax::F32Buffer>()   // tanh(cs) [B, T, U]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxLstmBackward, rnnjax::LstmBackward,
                              rnnjax::ffi::Ffi::Bind()
                                  .Ctx<rnnjax::ffi::ThreadPool>()
                                  .Arg<rnnjax::F32Buffer>()   // dhs [B, T, U]
                                  .Arg<rnnjax::F32Buffer>()   // dc_last [B, U]
                                  .Arg<rnnjax::F32Buffer>()   // gates [B, T, 4U]
                                  .Arg<rnnjax::F32Buffer>()   // cs [B, T, U]
                                  .Arg<rnnjax::F32Buffer>()   // tanh(cs) [B, T, U]
                                  .Arg<rnnjax::F32Buffer>()   // c0 [B, U]
                                  .Arg<rnnjax::F32Buffer>()   // recurrent kernel [U, 4U]
                                  .Arg<rnnjax::MaskBuffer>()  // mask [B, T] or empty
                                  .Arg<rnnjax::F32Buffer>()   // recurrent masks [B, 4, U] or empty
                                  .Ret<rnnjax::F32Buffer>()   // dz [B, T, 4U]
                                  .Ret<rnnjax::F32Buffer>()   // dh0 [B, U]
                                  .Ret<rnnjax::F32Buffer>()   // dc0 [B, U]
);
