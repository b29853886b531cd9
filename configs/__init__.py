"""ml_collections configs of train.py and eval.py; installed as the package tcvc_jax.configs."""
