"""headstream: tf.estimator heads on current TensorFlow, and a Beam evaluation pipeline.

Also the `--setup_file` for Dataflow workers (they import `heads` and `pipeline`). Workers get
dependencies from the pipeline's own `requirements.txt` pins, so install_requires lists only what the
evaluation path imports.
"""
import setuptools

setuptools.setup(
    name='headstream',
    version='0.1.0',
    description='tf.estimator heads on TensorFlow 2.21 and a fast Apache Beam evaluation pipeline',
    packages=setuptools.find_packages(include=['heads', 'heads.*', 'pipeline', 'pipeline.*']),
    package_data={'pipeline': ['templates/*']},
    include_package_data=True,
    python_requires='>=3.10',
    install_requires=['numpy', 'pyarrow', 'pyyaml', 'apache-beam'],
    entry_points={'console_scripts': ['headstream = pipeline.cli:main']},
)
