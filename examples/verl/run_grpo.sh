#!/usr/bin/env bash
# GRPO with sinkattn for actor and reference, as plain command-line overrides of VERL's default
# ppo_trainer config (equivalent to grpo_sinkattn.yaml). Needs: pip install verl sinkattn.
#   MODEL=/path/to/hf/model TRAIN=train.parquet VAL=test.parquet bash examples/verl/run_grpo.sh [more overrides]
set -euo pipefail
: "${MODEL:?set MODEL to a Hugging Face model directory}" "${TRAIN:?set TRAIN}" "${VAL:?set VAL}"
export VERL_USE_EXTERNAL_MODULES=sinkattn.hf
python3 -m verl.trainer.main_ppo \
  algorithm.adv_estimator=grpo \
  algorithm.use_kl_in_reward=False \
  data.train_files="$TRAIN" data.val_files="$VAL" \
  actor_rollout_ref.model.path="$MODEL" \
  actor_rollout_ref.model.external_lib=sinkattn.hf \
  +actor_rollout_ref.model.override_config.attn_implementation=sinkattn \
  actor_rollout_ref.model.use_remove_padding=True \
  actor_rollout_ref.actor.use_kl_loss=True \
  actor_rollout_ref.actor.kl_loss_coef=0.001 \
  actor_rollout_ref.rollout.n=8 \
  +ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=sinkattn.hf \
  "$@"
