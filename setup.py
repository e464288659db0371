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
    packages=setuptools.find_packages(include=['heads', 'heads.*', 'pipeline', 'pipeline.*'])
    + ['headstream_templates'],
    # templates/ (the report page, the Flex Template files) travels with the package, so workers
    # that write report.html find its template (pipeline/report/template.py falls back to this package).
    package_dir={'headstream_templates': 'templates'},
    package_data={'headstream_templates': ['report/*', 'flex/*']},
    include_package_data=True,
    python_requires='>=3.10',
    install_requires=['numpy', 'pyarrow', 'pyyaml', 'jinja2', 'apache-beam'],
    entry_points={'console_scripts': ['headstream = pipeline.cli:main']},
)
