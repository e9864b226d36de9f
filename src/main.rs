fn main() -> std::process::ExitCode {
    exedev_k8s::cli::main()
}
