//! The training losses: cross-entropy, and knowledge distillation's
//! `alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE` (Hinton et
//! al.; the KL term averaged over the batch, as PyTorch's
//! `F.kl_div(..., reduction="batchmean")`). Tested against PyTorch in
//! tests/loss.rs.

use tch::{Kind, TchError, Tensor};

/// Distillation settings: the teacher's logits for the batch, the
/// temperature and alpha (the weight of the soft term).
pub struct Soft<'a> {
    /// The teacher's logits, `[N, classes]`.
    pub teacher: &'a Tensor,
    /// Temperature T.
    pub temperature: f64,
    /// Weight of the distillation term.
    pub alpha: f64,
}

/// The loss of `logits` `[N, classes]` against labels `y` `[N]`, distilled
/// from a teacher when `soft` is given.
pub fn loss(logits: &Tensor, y: &Tensor, soft: Option<Soft>) -> Result<Tensor, TchError> {
    let ce = logits.f_cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, -100, 0.0)?;
    let Some(Soft {
        teacher,
        temperature: t,
        alpha,
    }) = soft
    else {
        return Ok(ce);
    };
    let log_pt = teacher.f_div_scalar(t)?.f_log_softmax(-1, Kind::Float)?;
    let log_ps = logits.f_div_scalar(t)?.f_log_softmax(-1, Kind::Float)?;
    let batch = logits.size().first().copied().unwrap_or(1).max(1);
    let kl = log_pt
        .f_exp()?
        .f_mul(&log_pt.f_sub(&log_ps)?)?
        .f_sum(Kind::Float)?
        .f_div_scalar(batch as f64)?;
    kl.f_mul_scalar(alpha * t * t)?
        .f_add(&ce.f_mul_scalar(1.0 - alpha)?)
}
