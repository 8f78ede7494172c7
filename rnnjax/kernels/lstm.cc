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
      // One block's worth of rows past the end: a block product reads kBlockRows states.
      std::vector<float> h_rows((rows + kBlockRows) * units, 0.0f), c_rows(rows * units);
      std::vector<float> z(kBlockRows * width, 0.0f), c_new(kBlockRows * units);
      std::vector<float> tanh_c(kBlockRows * units), scratch(kBlockRows * units);
      std::copy_n(h0.typed_data() + first * units, rows * units, h_rows.data());
      std::copy_n(c0.typed_data() + first * units, rows * units, c_rows.data());
      for (int64_t t = 0; t < time; ++t) {
        ForEachBlock(first, end, rows_per_model, [&](int64_t b0, int64_t count) {
          float* __restrict h = h_rows.data() + (b0 - first) * units;
          float* __restrict c = c_rows.data() + (b0 - first) * units;
          LoadStep(xw.typed_data(), b0, count, time, t, width, z.data());
          AddRecurrentProduct(h, dropout, b0, count,
                              r.typed_data() + (b0 / rows_per_model) * units * width, units,
                              width, 0, 4, scratch.data(), z.data(), width);
          for (int64_t l = 0; l < count; ++l) activations.Apply(&z[l * width], width);
          for (int64_t l = 0; l < count; ++l) {
            const float* a = &z[l * width];
            #pragma omp simd
            for (int64_t u = 0; u < units; ++u) {
              c_new[l * units + u] = a[units + u] * c[l * units + u] + a[u] * a[2 * units + u];
            }
          }
          #pragma omp simd
          for (int64_t i = 0; i < count * units; ++i) tanh_c[i] = Tanh(c_new[i]);
          for (int64_t l = 0; l < count; ++l) {
            const int64_t step = (b0 + l) * time + t;
            float* gates_out = gates->typed_data() + step * width;
            float* c_out = cs->typed_data() + step * units;
            float* tc_out = tanh_cs->typed_data() + step * units;
            float* h_out = hs->typed_data() + step * units;
            float* __restrict h_l = h + l * units;
            float* __restrict c_l = c + l * units;
            if (!keep.Keeps(b0 + l, t)) {
              // Padding: carry the states; the backward pass reads neither gates nor tanh(c).
              std::fill_n(gates_out, width, 0.0f);
              std::fill_n(tc_out, units, 0.0f);
              std::copy_n(c_l, units, c_out);
              std::copy_n(h_l, units, h_out);
              continue;
            }
            const float* a = &z[l * width];
            #pragma omp simd
            for (int64_t u = 0; u < units; ++u) {
              c_l[u] = c_new[l * units + u];
              h_l[u] = a[3 * units + u] * tanh_c[l * units + u];
            }
            std::copy_n(a, width, gates_out);
            std::copy_n(c_l, units, c_out);
            std::copy_n(&tanh_c[l * units], units, tc_out);
            std::copy_n(h_l, units, h_out);
          }
        });
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
      std::vector<float> dh_rows((rows + kBlockRows) * units, 0.0f), dc_rows(rows * units);
      std::vector<float> d(kBlockRows * width, 0.0f), scratch(kBlockRows * units);
      std::copy_n(dc_last.typed_data() + first * units, rows * units, dc_rows.data());
      for (int64_t t = time - 1; t >= 0; --t) {
        ForEachBlock(first, end, rows_per_model, [&](int64_t b0, int64_t count) {
          float* __restrict dh = dh_rows.data() + (b0 - first) * units;
          float* __restrict dc = dc_rows.data() + (b0 - first) * units;
          for (int64_t l = 0; l < count; ++l) {
            const int64_t b = b0 + l, step = b * time + t;
            const float* dh_out = dhs.typed_data() + step * units;
            float* __restrict d_l = &d[l * width];
            float* __restrict dh_l = dh + l * units;
            if (!keep.Keeps(b, t)) {
              // The step copied h and c: their gradients pass through unchanged (the product
              // below adds this row's zero dz).
              std::fill_n(d_l, width, 0.0f);
              #pragma omp simd
              for (int64_t u = 0; u < units; ++u) dh_l[u] += dh_out[u];
              continue;
            }
            const float* a = gates.typed_data() + step * width;
            const float* tc = tanh_cs.typed_data() + step * units;
            const float* c_prev =
                t > 0 ? cs.typed_data() + (step - 1) * units : c0.typed_data() + b * units;
            float* __restrict dc_l = dc + l * units;
            #pragma omp simd
            for (int64_t u = 0; u < units; ++u) {
              const float i = a[u], f = a[units + u], g = a[2 * units + u], o = a[3 * units + u];
              const float dh_u = dh_l[u] + dh_out[u];
              const float dc_u = dc_l[u] + dh_u * o * (1.0f - tc[u] * tc[u]);
              d_l[u] = dc_u * g * i * (1.0f - i);
              d_l[units + u] = dc_u * c_prev[u] * f * (1.0f - f);
              d_l[2 * units + u] = dc_u * i * (1.0f - g * g);
              d_l[3 * units + u] = dh_u * tc[u] * o * (1.0f - o);
              dc_l[u] = dc_u * f;
              dh_l[u] = 0.0f;
            }
          }
          AddTransposedProduct(d.data(), width, dropout, b0, count,
                               r_t.data() + (b0 / rows_per_model) * units * width, units, 0, 4,
                               scratch.data(), dh);
          StoreStep(d.data(), b0, count, time, t, width, dz->typed_data());
        });
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
