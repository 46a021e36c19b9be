#!/usr/bin/env bash
# PPO with sinkattn for actor, reference and critic, as plain command-line overrides of VERL's
# default ppo_trainer config (equivalent to ppo_sinkattn.yaml). Needs: pip install verl sinkattn.
#   MODEL=/path/to/hf/model TRAIN=train.parquet VAL=test.parquet bash examples/verl/run_ppo.sh [more overrides]
set -euo pipefail
: "${MODEL:?set MODEL to a Hugging Face model directory}" "${TRAIN:?set TRAIN}" "${VAL:?set VAL}"
export VERL_USE_EXTERNAL_MODULES=sinkattn.hf
python3 -m verl.trainer.main_ppo \
  algorithm.adv_estimator=gae \
  data.train_files="$TRAIN" data.val_files="$VAL" \
  actor_rollout_ref.model.path="$MODEL" \
  actor_rollout_ref.model.external_lib=sinkattn.hf \
  +actor_rollout_ref.model.override_config.attn_implementation=sinkattn \
  actor_rollout_ref.model.use_remove_padding=True \
  critic.model.path="$MODEL" \
  critic.model.external_lib=sinkattn.hf \
  +critic.model.override_config.attn_implementation=sinkattn \
  critic.model.use_remove_padding=True \
  +ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=sinkattn.hf \
  "$@"
