# ---- environment (rendered from the recipe's slurm section) ----
# Secrets (WANDB_API_KEY, HF_TOKEN) come from the submitting shell's environment through sbatch's
# default --export=ALL; they are never written into this script or its logs.
{{setup_lines}}
PY={{python}}
export PYTHONPATH={{code_root}}${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
RUN_DIR={{run_dir}}
RECIPE="$RUN_DIR/recipe.resolved.yaml"
SLURM_DIR="$RUN_DIR/slurm"
FLYWHEEL=("$PY" -m trainer.cli)
mkdir -p "$SLURM_DIR/status" "$SLURM_DIR/logs" "$SLURM_DIR/preempt"
source "$SLURM_DIR/job-lib.sh"  # status json, FAILED.md, traps, run_step
