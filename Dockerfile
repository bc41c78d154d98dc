# The harness's GPU image (docs/production.md): vLLM's own CUDA image at the cuda profile's vLLM
# version (requirements/stack-cuda.txt), with the rest of the stack installed in scripts/setup's
# order and with its pins. tests/test_production_files.py checks that every pin here equals the
# project's (requirements/, scripts/setup, pyproject.toml) and lints this file with hadolint.
#
#   docker build -t harness:dev --build-arg HARNESS_UID="$(id -u)" .
#   docker run --rm --gpus all --ipc=host -v harness-cache:/cache -v "$PWD/results:/results" \
#     harness:dev run configs/coder7b.yaml

# ---- llama.cpp -------------------------------------------------------------------------------
# PyPI's llama-cpp-python is an sdist only: its wheel is compiled here, with CUDA, on the same
# base as the final image; only the wheel, llama.cpp's HF -> GGUF converter and its programs leave
# this stage.
FROM vllm/vllm-openai:v0.32.0 AS llama-cpp
ARG LLAMA_CPP_PYTHON=0.3.36
# A100, L40S/L4, H100/H200; add 100 for B200
ARG CUDA_ARCHITECTURES="80;89;90"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Build tools of the base image's Ubuntu release and CUDA (both fixed by its tag); they stay in
# this stage. nvcc and the CUDA headers come from NVIDIA's apt repository (configured in the
# base) when the base image has no nvcc of its own.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake git \
 && if [ ! -x /usr/local/cuda/bin/nvcc ]; then \
      cuda="$(echo "${CUDA_VERSION}" | cut -d. -f1,2 | tr . -)"; \
      apt-get install -y --no-install-recommends "cuda-nvcc-${cuda}" "cuda-cudart-dev-${cuda}" "libcublas-dev-${cuda}"; \
    fi \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
RUN python3 -m pip download --no-cache-dir --no-deps --no-binary :all: "llama-cpp-python==${LLAMA_CPP_PYTHON}" -d /build/sdist \
 && CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES} -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    python3 -m pip wheel --no-cache-dir --no-deps "/build/sdist/llama_cpp_python-${LLAMA_CPP_PYTHON}.tar.gz" -w /build/wheels \
 && mkdir -p /build/llama.cpp \
 && vendor="llama_cpp_python-${LLAMA_CPP_PYTHON}/vendor/llama.cpp" \
 && tar -xzf "/build/sdist/llama_cpp_python-${LLAMA_CPP_PYTHON}.tar.gz" -C /build/llama.cpp --strip-components=3 \
      "$vendor/convert_hf_to_gguf.py" "$vendor/conversion" "$vendor/gguf-py" "$vendor/LICENSE"
# llama.cpp's programs from the same sources, as scripts/setup builds them (with CUDA here, for
# any x86-64 CPU): llama-imatrix + llama-quantize (GGUF calibration), llama-server (GGUF under
# load), llama-perplexity and llama-bench (references). No web UI (it would be fetched).
RUN mkdir -p /build/src /build/llama.cpp/bin \
 && tar -xzf "/build/sdist/llama_cpp_python-${LLAMA_CPP_PYTHON}.tar.gz" -C /build/src --strip-components=3 \
      "llama_cpp_python-${LLAMA_CPP_PYTHON}/vendor/llama.cpp" \
 && cmake -S /build/src -B /build/src/build -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
      -DGGML_CUDA=on -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
      -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
 && cmake --build /build/src/build -j "$(nproc)" \
      --target llama-imatrix llama-quantize llama-server llama-perplexity llama-bench \
 && cp /build/src/build/bin/llama-imatrix /build/src/build/bin/llama-quantize /build/src/build/bin/llama-server \
      /build/src/build/bin/llama-perplexity /build/src/build/bin/llama-bench /build/llama.cpp/bin/ \
 && rm -rf /build/src

# ---- the image -------------------------------------------------------------------------------
FROM vllm/vllm-openai:v0.32.0
LABEL org.opencontainers.image.title="harness" \
      org.opencontainers.image.description="Config-driven quantize-and-benchmark harness for LLM serving (vLLM, llm-compressor, lm-eval, llama.cpp)"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# PIP_BREAK_SYSTEM_PACKAGES: the stack goes into the base image's own Python, where vLLM is;
# a distro-managed Python would otherwise refuse pip (PEP 668).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1 \
    HARNESS_CACHE=/cache/harness \
    HF_HOME=/cache/huggingface \
    HARNESS_LLAMACPP_DIR=/opt/harness/llama.cpp
WORKDIR /opt/harness

# 1/4 the serving/eval stack (requirements/stack-cuda.txt); vllm==0.32.0 is the base image's
RUN python3 -m pip install --no-cache-dir "transformers==5.17.0" "lm-eval[api,math]==0.4.13"
# 2/4 llm-compressor's own requirements, and Ray for `executor: ray` (every node of a cluster runs
# this image: one Ray version), from the files scripts/setup installs
COPY requirements/ requirements/
RUN python3 -m pip install --no-cache-dir -r requirements/quantize-deps.txt -r requirements/ray.txt
# 3/4 the harness, with pyproject.toml's dependencies; then
# 4/4 llm-compressor and compressed-tensors 0.19 without their dependencies, last: no pip set
# resolves with vLLM's compressed-tensors pin (requirements/quantize-nodeps.txt says why)
COPY pyproject.toml README.md ./
COPY harness/ harness/
RUN python3 -m pip install --no-cache-dir . \
 && python3 -m pip install --no-cache-dir --no-deps "llmcompressor==0.14.0.1" "compressed-tensors==0.19.0"
# llama.cpp for the GGUF formats: the wheel built above, and what scripts/setup adds beside it
COPY --from=llama-cpp /build/wheels/ /tmp/wheels/
COPY --from=llama-cpp /build/llama.cpp/ /opt/harness/llama.cpp/
RUN python3 -m pip install --no-cache-dir --no-deps /tmp/wheels/llama_cpp_python-*.whl \
 && python3 -m pip install --no-cache-dir "diskcache>=5.6.1" "jinja2>=2.11.3" \
 && rm -rf /tmp/wheels
# bubblewrap: the sandbox HumanEval's model-written code runs in (it fails closed without it;
# the container must allow user namespaces: docs/production.md, "Threat model")
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*

COPY configs/ configs/
COPY calib/ calib/
COPY scripts/ scripts/

# A non-root user; HARNESS_UID should match the user that owns the mounted volumes (a CI
# runner's user, for one). Results written to results/NAME land in the /results volume.
# The import check runs without a GPU: llama_cpp (CUDA) is only looked up, not loaded.
ARG HARNESS_UID=1000
RUN useradd --create-home --non-unique --uid "${HARNESS_UID}" --shell /bin/bash harness \
 && mkdir -p /cache/harness /cache/huggingface /results \
 && chown -R harness /cache /results \
 && ln -s /results /opt/harness/results \
 && python3 -c "import vllm, llmcompressor, compressed_tensors, lm_eval, ray, harness; from importlib.metadata import version; print('vllm', vllm.__version__, '| llmcompressor', llmcompressor.__version__, '| compressed-tensors', compressed_tensors.__version__, '| llama-cpp-python', version('llama-cpp-python'))"
VOLUME ["/cache", "/results"]
ENV HOME=/home/harness
USER ${HARNESS_UID}

ENTRYPOINT ["python3", "-m", "harness"]
CMD ["--help"]
