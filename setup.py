"""pgf_sparsity: N:M sparse training of Transformers by Progressive Gradient Flow (JAX/Flax)."""
import setuptools

# One tested set of versions (Python 3.11, CPU); bump together and rerun the tests.
INSTALL_REQUIRES = [
    'jax==0.10.2',
    'jaxlib==0.10.2',
    'flax==0.12.8',
    'optax==0.2.8',
    'ml-collections==1.1.0',
    'absl-py==2.5.1',
    'clu==0.0.12',
    'orbax-checkpoint==0.12.8',
    'tensorstore==0.1.86',  # T5X checkpoints (converters.py); orbax's own dependency
    'tensorflow-cpu==2.21.0',
    'tensorflow-datasets==4.9.10',
    'tensorboard==2.21.0',
    'numpy==2.4.6',
    'scikit-learn==1.9.1',
    'scipy==1.17.1',  # position-embedding resampling (initialise.py), t intervals (scripts/make_tables.py)
    'sentencepiece==0.2.3',
    'sacrebleu==2.6.0',
    'safetensors==0.8.0',
    'ml-dtypes==0.6.0',
    'grain==0.2.18',  # step-addressable tfds input (data/tfds_access.py)
]
TESTS_REQUIRE = ['pytest==9.2.0', 'pytest-xdist==3.8.0', 'hypothesis==6.170.17']
TORCH_REQUIRE = ['torch==2.13.0']  # optional: PyTorch-side checks of exported models (a CPU build installs here)
TRANSFORMERS_REQUIRE = ['transformers==5.24.0']  # optional: the Hugging Face T5 converter checked against it
SCRIPTS_REQUIRE = ['matplotlib==3.11.2']  # scripts/plot.py

setuptools.setup(
    name='pgf_sparsity',
    version='0.1.0',
    description=__doc__,
    packages=setuptools.find_packages(include=['pgf_sparsity', 'pgf_sparsity.*']),
    python_requires='>=3.11',
    install_requires=INSTALL_REQUIRES,
    extras_require={'test': TESTS_REQUIRE + SCRIPTS_REQUIRE + TORCH_REQUIRE + TRANSFORMERS_REQUIRE,
                    'scripts': SCRIPTS_REQUIRE, 'torch': TORCH_REQUIRE},
)
