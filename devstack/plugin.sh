#!/bin/bash
# devstack plugin for trusted_pools: enable with
#   enable_plugin trusted-pools <repository URL or path>
# At this stage the project ships the evidence library and the
# trusted-pools-manage CLI; the conductor, agent and scheduler filter are
# wired in here as they land.

function install_trusted_pools {
    install_package swtpm swtpm-tools tpm2-tools libtss2-dev
    setup_develop $TRUSTED_POOLS_DIR
}

function configure_trusted_pools {
    sudo install -d -o $STACK_USER $TRUSTED_POOLS_CONF_DIR
    (cd $TRUSTED_POOLS_DIR && oslo-config-generator \
        --config-file etc/trusted-pools/trusted-pools-config-generator.conf \
        --output-file $TRUSTED_POOLS_CONF)
    iniset $TRUSTED_POOLS_CONF tpm tcti "$TRUSTED_POOLS_TPM_TCTI"
}

if is_service_enabled trusted-pools || [[ "$1" == "stack" ]]; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing trusted_pools"
        install_trusted_pools
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring trusted_pools"
        configure_trusted_pools
    fi
fi
