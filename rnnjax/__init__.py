"""rnnjax: Keras-exact recurrent sequence models and training in JAX/Flax."""
