package io.vmgate.egress;

import ch.qos.logback.classic.Level;
import io.vmgate.exec.ExitStatus;
import io.vmgate.agent.GuestProcess;
import io.vmgate.agent.ProcessSpec;
import io.vmgate.image.ImageStore;
import io.vmgate.vm.Network;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.qemu.Snapshots;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.slf4j.LoggerFactory;

/**
 * The guest side of bench/bench.py's egress row: downloads {@code URL} (a server on the host's
 * loopback) with busybox wget in a VM restored from the default image's template, RUNS times,
 * and prints one line {@code RESULT mode seconds...}: the time of each download as the host sees
 * it (START to EXIT), minus the median of an empty command, so the process start is not counted.
 *
 * <pre>
 * EgressBench egress URL RUNS   through the agent's proxy (policy: the URL's host:port)
 * EgressBench open URL RUNS     through --net open (QEMU user-mode NAT; the host is 10.0.2.2)
 * </pre>
 */
public final class EgressBench {
    private EgressBench() {}

    public static void main(String[] args) throws Exception {
        ((ch.qos.logback.classic.Logger) LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME))
                .setLevel(Level.toLevel(System.getProperty("vmgate.bench.log", "WARN")));
        String mode = args[0];
        String url = args[1];
        int runs = Integer.parseInt(args[2]);
        String hostPort = url.replaceFirst("^http://([^/]+)/.*$", "$1");
        boolean open = mode.equals("open");
        String agent = System.getProperty("vmgate.bench.agent"); // another agent binary, to compare two
        var image = agent == null ? ImageStore.atDefaultLocation().defaultImage()
                : ImageStore.atDefaultLocation().image(io.vmgate.image.ImageSources.debian()
                        .withAgent(io.vmgate.image.AgentBinary.file(java.nio.file.Path.of(agent))));
        VmConfig cfg = VmConfig.defaults(image).withNetwork(open ? Network.OPEN : Network.NONE);
        try (Vm vm = new Snapshots(cfg, ImageStore.defaultRoot().resolve("templates"), false).launch("egress-bench");
                Egress egress = Egress.start(vm.agent(), open ? EgressPolicy.none() : EgressPolicy.parse(hostPort),
                        EgressLimits.defaults(), "bench")) {
            String target = open ? url.replace("127.0.0.1", "10.0.2.2") : url;
            Map<String, String> env = egress.environment();
            List<Long> empty = new ArrayList<>();
            for (int i = 0; i < 5; i++) {
                empty.add(timed(vm, env, "true"));
            }
            long base = empty.stream().sorted().toList().get(2);
            timed(vm, env, "wget -q -O /dev/null " + target); // warm-up: page cache, TCG's translations, the JIT
            StringBuilder out = new StringBuilder("RESULT " + mode);
            StringBuilder cpu = new StringBuilder("CPU " + mode);
            long pid = ((io.vmgate.vm.qemu.QemuVm) vm).pid().orElseThrow();
            for (int i = 0; i < runs; i++) {
                long c0 = cpuNanos(pid);
                out.append(' ').append(String.format("%.3f", (timed(vm, env, "wget -q -O /dev/null " + target) - base) / 1e9));
                cpu.append(' ').append(String.format("%.3f", (cpuNanos(pid) - c0) / 1e9));
            }
            System.out.println(out);
            System.out.println(cpu); // QEMU's and this JVM's CPU time per download: steadier than wall time on a busy machine
        }
    }

    /** CPU time of QEMU (utime + stime from /proc) and of this JVM, in nanoseconds. */
    private static long cpuNanos(long qemuPid) throws java.io.IOException {
        String stat = java.nio.file.Files.readString(java.nio.file.Path.of("/proc/" + qemuPid + "/stat"));
        String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        long ticks = Long.parseLong(f[11]) + Long.parseLong(f[12]); // fields 14 and 15
        long jvm = ((com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
        return ticks * 10_000_000L + jvm;
    }

    private static long timed(Vm vm, Map<String, String> env, String cmd) throws Exception {
        long t0 = System.nanoTime();
        GuestProcess p = vm.agent().start(ProcessSpec.shellCommand(cmd).withEnv(env));
        p.stdin().close();
        byte[] err = p.stderr().readAllBytes();
        p.stdout().readAllBytes();
        ExitStatus x = p.exit().get(600, TimeUnit.SECONDS);
        if (x.code() != 0) {
            throw new IllegalStateException(cmd + " failed (" + x + "): " + new String(err));
        }
        return System.nanoTime() - t0;
    }
}
