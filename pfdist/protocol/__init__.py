"""The teacher-student protocol: training sets, students, E_gen / E_mem, bias-variance."""

from pfdist.protocol.bias_variance import SEED_MODES, BiasVariance, bias_variance, decompose, student_train_config
from pfdist.protocol.data import DATASET_STRIDE, EVAL_SEED, TEST_SEED, dataset_seeds, teacher_samples
from pfdist.protocol.distill import distill, distill_pairs, load_distilled
from pfdist.protocol.evaluate import (EvalConfig, copier_outputs, evaluate_student, mean_loss, memorization_ratio,
                                     space_errors, wilson_interval)
from pfdist.protocol.student import missing_evaluations, read_results, student_key, teacher_map, teacher_student

__all__ = [
    "BiasVariance", "DATASET_STRIDE", "EVAL_SEED", "EvalConfig", "SEED_MODES", "TEST_SEED", "bias_variance",
    "copier_outputs", "dataset_seeds", "decompose", "distill", "distill_pairs", "load_distilled", "evaluate_student", "mean_loss", "memorization_ratio",
    "missing_evaluations", "read_results", "space_errors", "student_key", "student_train_config", "teacher_map",
    "teacher_samples", "teacher_student", "wilson_interval",
]
