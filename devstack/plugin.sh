#!/bin/bash
# devstack plugin for trusted_pools: enable with
#   enable_plugin trusted-pools <repository URL or path>
# Services: tp-api (trusted-pools-api, Keystone service type
# 'trusted-pools' on port 9440), tp-cond (trusted-pools-conductor),
# tp-agent (trusted-pools-agent, on every compute host) and
# tp-placement-sync (trusted-pools-placement-sync: Placement traits and the
# response to distrust). The Nova filter is enabled in nova-scheduler; with
# TRUSTED_POOLS_NOVA_KEY_MANAGER=True, Nova's vTPM secrets are kept by the
# conductors (castellan backend 'trusted_pools').
# Phases: stack install|post-config|extra, unstack, clean.

function install_trusted_pools {
    install_package swtpm swtpm-tools tpm2-tools libtss2-dev
    setup_develop "$TRUSTED_POOLS_DIR"
}

function configure_trusted_pools {
    sudo install -d -o "$STACK_USER" "$TRUSTED_POOLS_CONF_DIR"
    (cd "$TRUSTED_POOLS_DIR" && oslo-config-generator \
        --config-file etc/trusted-pools/trusted-pools-config-generator.conf \
        --output-file "$TRUSTED_POOLS_CONF")
    iniset "$TRUSTED_POOLS_CONF" tpm tcti "$TRUSTED_POOLS_TPM_TCTI"
    configure_trusted_pools_rabbitmq
    iniset "$TRUSTED_POOLS_CONF" database connection \
        "$(database_connection_url trusted_pools)"
    iniset "$TRUSTED_POOLS_CONF" conductor ek_ca_bundle \
        "$TRUSTED_POOLS_CONF_DIR/ek-ca.pem"
    configure_trusted_pools_keys
    if [[ "$TRUSTED_POOLS_NOVA_KEY_MANAGER" == "True" ]]; then
        configure_trusted_pools_nova_key_manager
    fi
    iniset "$TRUSTED_POOLS_CONF" trusted_pools_api port "$TRUSTED_POOLS_API_PORT"
    iniset "$TRUSTED_POOLS_CONF" trusted_pools_api auth_strategy keystone
    configure_keystone_authtoken_middleware "$TRUSTED_POOLS_CONF" trusted-pools
    local filter=trusted_pools.nova.scheduler.filters.TrustedHostFilter
    iniadd "$NOVA_CONF" filter_scheduler available_filters "$filter"
    iniset "$NOVA_CONF" filter_scheduler enabled_filters \
        "$(iniget "$NOVA_CONF" filter_scheduler enabled_filters),TrustedHostFilter"
}

# Agents answer only requests signed by a conductor key they pin. The
# conductor's key is made here (rather than at its first start) so that its
# public half can be pinned before the agent starts. On a multi-node
# deployment, copy the controller's $TRUSTED_POOLS_CONDUCTOR_KEYS to every
# compute node (or set TRUSTED_POOLS_CONDUCTOR_KEYS to a copy of it there).
function configure_trusted_pools_keys {
    local key=$TRUSTED_POOLS_DATA_DIR/conductor-signing-key.pem
    local manage=$TRUSTED_POOLS_BIN_DIR/trusted-pools-manage
    sudo install -d -o "$STACK_USER" -m 0700 "$TRUSTED_POOLS_DATA_DIR"
    iniset "$TRUSTED_POOLS_CONF" conductor signing_key_path "$key"
    iniset "$TRUSTED_POOLS_CONF" agent conductor_keys_file \
        "$TRUSTED_POOLS_CONDUCTOR_KEYS"
    if is_service_enabled tp-cond; then
        if [[ ! -f $key ]]; then
            "$manage" conductor-key generate "$key" > /dev/null
        fi
        "$manage" conductor-key show --key "$key" \
            > "$TRUSTED_POOLS_CONDUCTOR_KEYS"
    fi
    if is_service_enabled tp-agent && [[ ! -s $TRUSTED_POOLS_CONDUCTOR_KEYS ]]; then
        die $LINENO "trusted-pools-agent needs the conductor's public key in $TRUSTED_POOLS_CONDUCTOR_KEYS"
    fi
}

# The password of RabbitMQ user $1 from $TRUSTED_POOLS_RABBIT_PASSWORD_FILE,
# made (random, 32 hex digits) and recorded there the first time.
function _trusted_pools_rabbit_password {
    local user=$1 file=$TRUSTED_POOLS_RABBIT_PASSWORD_FILE password
    if [[ ! -f $file ]]; then
        (umask 077 && touch "$file")
    fi
    password=$(awk -v u="$user" '$1 == u {print $2; exit}' "$file")
    if [[ -z $password ]]; then
        password=$(openssl rand -hex 16)
        echo "$user $password" >> "$file"
    fi
    echo "$password"
}

# rabbit://USER:PASSWORD@HOST:PORT/VHOST for RabbitMQ user $1 in vhost $2.
function _trusted_pools_transport_url {
    local user=$1 vhost=$2
    echo "rabbit://$user:$(_trusted_pools_rabbit_password "$user")@$TRUSTED_POOLS_RABBIT_HOST:$TRUSTED_POOLS_RABBIT_PORT/$vhost"
}

# A RabbitMQ user per role, each service with its own transport_url: the
# broker then refuses what a compute host's credentials must not do (reach
# the management vhost, announce an epoch, push evidence for another host).
function configure_trusted_pools_rabbitmq {
    local service=$TRUSTED_POOLS_RABBIT_SERVICE_USER
    local consumer=$TRUSTED_POOLS_RABBIT_CONSUMER_USER
    local mgmt=$TRUSTED_POOLS_RABBIT_VHOST agent_vhost=$TRUSTED_POOLS_RABBIT_AGENT_VHOST
    local remediation=$TRUSTED_POOLS_RABBIT_REMEDIATION_USER
    local host agent_args=()
    for host in ${TRUSTED_POOLS_AGENT_HOSTS//,/ }; do
        _trusted_pools_rabbit_password tp-agent-"$host" > /dev/null
        agent_args+=(--agent-user "tp-agent-$host=$host")
    done
    _trusted_pools_rabbit_password "$service" > /dev/null
    _trusted_pools_rabbit_password "$consumer" > /dev/null
    _trusted_pools_rabbit_password "$remediation" > /dev/null
    if is_service_enabled rabbit; then
        # rabbitmqctl needs root (or the rabbitmq user).
        sudo "$TRUSTED_POOLS_BIN_DIR"/trusted-pools-manage rabbitmq setup \
            --vhost "$mgmt" --agent-vhost "$agent_vhost" \
            --service-user "$service" --consumer-user "$consumer" \
            --remediation-user "$remediation" \
            "${agent_args[@]}" \
            --password-file "$TRUSTED_POOLS_RABBIT_PASSWORD_FILE"
    fi
    # The shared file has no transport_url: each service reads its own.
    iniset "$TRUSTED_POOLS_API_CONF" DEFAULT transport_url \
        "$(_trusted_pools_transport_url "$service" "$mgmt")"
    iniset "$TRUSTED_POOLS_CONDUCTOR_CONF" DEFAULT transport_url \
        "$(_trusted_pools_transport_url "$service" "$mgmt")"
    iniset "$TRUSTED_POOLS_CONDUCTOR_CONF" conductor agent_transport_url \
        "$(_trusted_pools_transport_url "$service" "$agent_vhost")"
    iniset "$TRUSTED_POOLS_AGENT_CONF" DEFAULT transport_url \
        "$(_trusted_pools_transport_url tp-agent-"$TRUSTED_POOLS_AGENT_HOST" "$agent_vhost")"
    iniset "$TRUSTED_POOLS_AGENT_CONF" agent host "$TRUSTED_POOLS_AGENT_HOST"
    # trusted-pools-placement-sync: notifications in, Placement and Nova
    # calls out (as the trusted-pools service user).
    iniset "$TRUSTED_POOLS_PLACEMENT_SYNC_CONF" trusted_pools_scheduler \
        transport_url "$(_trusted_pools_transport_url "$remediation" "$mgmt")"
    iniset "$TRUSTED_POOLS_PLACEMENT_SYNC_CONF" trusted_pools_scheduler \
        conductor_public_keys "$TRUSTED_POOLS_CONDUCTOR_KEYS"
    local group
    for group in trusted_pools_placement trusted_pools_distrust; do
        _trusted_pools_service_auth "$TRUSTED_POOLS_PLACEMENT_SYNC_CONF" $group
    done
    chmod 0600 "$TRUSTED_POOLS_API_CONF" "$TRUSTED_POOLS_CONDUCTOR_CONF" \
        "$TRUSTED_POOLS_AGENT_CONF" "$TRUSTED_POOLS_PLACEMENT_SYNC_CONF"
    # nova-scheduler's filter: notifications and verdict reads only, and
    # the conductor keys pinned from a file (never from the bus).
    iniset "$NOVA_CONF" trusted_pools_scheduler transport_url \
        "$(_trusted_pools_transport_url "$consumer" "$mgmt")"
    iniset "$NOVA_CONF" trusted_pools_scheduler conductor_public_keys \
        "$TRUSTED_POOLS_CONDUCTOR_KEYS"
}

# keystoneauth options of group $2 in file $1: the trusted-pools service
# user, as devstack made it.
function _trusted_pools_service_auth {
    local file=$1 group=$2
    iniset "$file" "$group" auth_type password
    iniset "$file" "$group" auth_url "$KEYSTONE_SERVICE_URI"
    iniset "$file" "$group" username trusted-pools
    iniset "$file" "$group" password "$SERVICE_PASSWORD"
    iniset "$file" "$group" user_domain_name "$SERVICE_DOMAIN_NAME"
    iniset "$file" "$group" project_name "$SERVICE_PROJECT_NAME"
    iniset "$file" "$group" project_domain_name "$SERVICE_DOMAIN_NAME"
    iniset "$file" "$group" region_name "$REGION_NAME"
}

# Nova's vTPM secrets kept by the conductors' key service, released only to
# attested hosts (doc/source/vtpm-keys.md).
function configure_trusted_pools_nova_key_manager {
    iniset "$TRUSTED_POOLS_CONF" key_service enabled True
    iniset "$TRUSTED_POOLS_CONF" key_service kek_path \
        "$TRUSTED_POOLS_DATA_DIR/key-encryption-key"
    iniset "$NOVA_CONF" key_manager backend trusted_pools
    iniset "$NOVA_CONF" trusted_pools_key_manager api_endpoint \
        "$TRUSTED_POOLS_API_URL"
    iniset "$NOVA_CONF" trusted_pools_key_manager host \
        "$TRUSTED_POOLS_AGENT_HOST"
    iniset "$NOVA_CONF" trusted_pools_key_manager tcti \
        "$TRUSTED_POOLS_TPM_TCTI"
    iniset "$NOVA_CONF" libvirt swtpm_enabled True
}

# The service user and the catalog entry clients find the API by.
function create_trusted_pools_accounts {
    create_service_user "trusted-pools" "admin"
    get_or_create_service "trusted-pools" "trusted-pools" \
        "Trusted compute pools: TPM attestation of compute hosts"
    get_or_create_endpoint "trusted-pools" "$REGION_NAME" \
        "$TRUSTED_POOLS_API_URL"
}

function init_trusted_pools {
    recreate_database trusted_pools
    trusted-pools-manage --config-file "$TRUSTED_POOLS_CONF" db sync
}

function start_trusted_pools {
    run_process tp-api "$TRUSTED_POOLS_BIN_DIR/trusted-pools-api --config-file $TRUSTED_POOLS_CONF --config-file $TRUSTED_POOLS_API_CONF"
    if ! wait_for_service "$SERVICE_TIMEOUT" "$TRUSTED_POOLS_API_URL"/healthcheck; then
        die $LINENO "trusted-pools-api did not start"
    fi
    run_process tp-cond "$TRUSTED_POOLS_BIN_DIR/trusted-pools-conductor --config-file $TRUSTED_POOLS_CONF --config-file $TRUSTED_POOLS_CONDUCTOR_CONF"
    run_process tp-agent "$TRUSTED_POOLS_BIN_DIR/trusted-pools-agent --config-file $TRUSTED_POOLS_CONF --config-file $TRUSTED_POOLS_AGENT_CONF"
    run_process tp-placement-sync "$TRUSTED_POOLS_BIN_DIR/trusted-pools-placement-sync --config-file $TRUSTED_POOLS_CONF --config-file $TRUSTED_POOLS_PLACEMENT_SYNC_CONF"
}

function stop_trusted_pools {
    local service
    for service in tp-api tp-cond tp-agent tp-placement-sync; do
        stop_process $service
    done
}

# Everything stack made: files, the database, the broker's vhosts and users.
function cleanup_trusted_pools {
    local user host
    sudo rm -rf "$TRUSTED_POOLS_CONF_DIR" "$TRUSTED_POOLS_DATA_DIR"
    if is_service_enabled mysql postgresql; then
        drop_database trusted_pools
    fi
    if is_service_enabled rabbit; then
        for user in $TRUSTED_POOLS_RABBIT_SERVICE_USER \
                $TRUSTED_POOLS_RABBIT_CONSUMER_USER \
                $TRUSTED_POOLS_RABBIT_REMEDIATION_USER; do
            sudo rabbitmqctl delete_user "$user" || true
        done
        for host in ${TRUSTED_POOLS_AGENT_HOSTS//,/ }; do
            sudo rabbitmqctl delete_user "tp-agent-$host" || true
        done
        sudo rabbitmqctl delete_vhost "$TRUSTED_POOLS_RABBIT_VHOST" || true
        sudo rabbitmqctl delete_vhost "$TRUSTED_POOLS_RABBIT_AGENT_VHOST" \
            || true
    fi
}

if is_service_enabled tp-api tp-cond tp-agent tp-placement-sync; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing trusted_pools"
        install_trusted_pools
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring trusted_pools"
        configure_trusted_pools
        if is_service_enabled keystone; then
            create_trusted_pools_accounts
        fi
        init_trusted_pools
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        echo_summary "Starting trusted_pools"
        start_trusted_pools
    fi
    if [[ "$1" == "unstack" ]]; then
        stop_trusted_pools
    fi
    if [[ "$1" == "clean" ]]; then
        cleanup_trusted_pools
    fi
fi
