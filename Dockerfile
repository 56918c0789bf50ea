# mpsciml training image (CUDA). torch comes from the base image; pyproject's torch>=2.4
# is satisfied by it, so `pip install -e .` adds only the other dependencies.
#
#   docker build -t mpsciml .
#   docker run --gpus all -v "$PWD/outputs:/app/outputs" mpsciml precision=mixed problem=navier_stokes
FROM pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    WANDB_MODE=offline \
    WANDB_DIR=/app/outputs \
    MPSCIML_DATA_DIR=/app/outputs/data_cache \
    MPLBACKEND=Agg

# Non-root user; pass --build-arg APP_UID=$(id -u) so files in a bind-mounted outputs/
# belong to you on the host.
ARG APP_UID=1000
ARG APP_GID=1000
RUN groupadd --gid "${APP_GID}" app \
    && useradd --uid "${APP_UID}" --gid app --create-home --shell /bin/bash app

WORKDIR /app

# Dependencies first (cached until pyproject.toml, README.md or src/ change).
COPY pyproject.toml README.md ./
COPY src/ ./src/
RUN pip install --no-cache-dir -e . \
    && python -c "import torch, mpsciml; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

COPY conf/ ./conf/
COPY scripts/ ./scripts/
COPY train.py ./

RUN mkdir -p /app/outputs && chown app:app /app/outputs
VOLUME /app/outputs

USER ${APP_UID}:${APP_GID}

ENTRYPOINT ["python", "train.py"]
CMD []
