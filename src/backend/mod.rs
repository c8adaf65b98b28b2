//! burn integration (in progress).

pub(crate) mod wgpu;

#[cfg(test)]
mod tests {
    use burn::tensor::{Int, Tensor, TensorData, TensorPrimitive};

    use super::wgpu::WgpuF32;
    use crate::{MobaConfig, Shape, random, reference};

    #[test]
    fn burn_wgpu_forward_and_backward_match_the_reference() {
        let device = Default::default();
        let shape = Shape {
            batch: 1,
            q_heads: 2,
            kv_heads: 1,
            q_len: 40,
            kv_len: 40,
            head_dim: 16,
        };
        let config = MobaConfig::new(8, 2);
        let q = random::normal(shape.q_elems(), 1);
        let k = random::normal(shape.kv_elems(), 2);
        let v = random::normal(shape.kv_elems(), 3);
        let dout = random::normal(shape.q_elems(), 4);
        let tensor = |data: &[f32], dims: [usize; 4]| {
            Tensor::<WgpuF32, 4>::from_data(TensorData::new(data.to_vec(), dims), &device)
                .into_primitive()
                .tensor()
        };
        let qd = [1, 2, 40, 16];
        let kd = [1, 1, 40, 16];
        let [o, lse, sel] =
            super::wgpu::forward(tensor(&q, qd), tensor(&k, kd), tensor(&v, kd), &config);
        let o = Tensor::<WgpuF32, 4>::from_primitive(TensorPrimitive::Float(o.clone()));
        let want = reference::forward(&q, &k, &v, &shape, &config).unwrap();
        let got: Vec<f32> = o.to_data().to_vec().unwrap();
        assert!(reference::max_abs_error(&got, &want.o) < 1e-5);
        let sel_t = Tensor::<WgpuF32, 4, Int>::from_primitive(sel.clone());
        let got_sel: Vec<i32> = sel_t.to_data().to_vec().unwrap();
        assert_eq!(got_sel, want.selection);
        let [dq, dk, dv] = super::wgpu::backward(
            [
                tensor(&q, qd),
                tensor(&k, kd),
                tensor(&v, kd),
                o.into_primitive().tensor(),
                lse,
                sel,
            ],
            tensor(&dout, qd),
            &config,
        );
        let grads = reference::backward(&q, &k, &v, &dout, &shape, &config).unwrap();
        for (got, want) in [(dq, &grads.dq), (dk, &grads.dk), (dv, &grads.dv)] {
            let got: Vec<f32> = Tensor::<WgpuF32, 4>::from_primitive(TensorPrimitive::Float(got))
                .to_data()
                .to_vec()
                .unwrap();
            let err = reference::max_abs_error(&got, want);
            assert!(err < 1e-4, "{err}");
        }
    }
}
