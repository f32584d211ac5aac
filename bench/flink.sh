# Sourced by the benchmark scripts: flink_env SLOTS DIR installs Flink 1.20.3 if needed
# (../shared/anchors/flink/setup.sh) and points FLINK_HOME and FLINK_CONF_DIR at it, with a copy
# of its configuration in DIR/flink-conf giving each TaskManager SLOTS slots. Sets home (Flink's
# directory), root (where setup.sh put it and bench.jar) and conf.
flink_env() {
  home=$(../shared/anchors/flink/setup.sh | tail -n 1)
  root=$(dirname "$home")
  conf=$2/flink-conf && rm -rf "$conf" && cp -r "$home/conf" "$conf"
  sed -i "s/numberOfTaskSlots: [0-9]*/numberOfTaskSlots: $1/" "$conf/config.yaml"
  export FLINK_HOME=$home FLINK_CONF_DIR=$conf
}
