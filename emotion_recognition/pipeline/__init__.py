"""The training pipeline behind ``dvc repro``: reading FER2013 (data), split, augment, the model
builders (model), training, evaluation, the MLflow set-up (tracking) and registry, and the release
step that bundles a run's model (bundle). Stage scripts in ``stages/`` call these.

Needs the ``[pipeline]`` extra (MLflow, DVC, ...). Inference, the CLI and the service use only the
package's top level; the Bento carries no file of this subpackage.
"""
