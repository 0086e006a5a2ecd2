package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.ssh.SshClientHelper;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code serve --persist home} with the real OpenSSH client: a user's home outlives connections and
 * server restarts, other users and the rest of the filesystem do not see it, a user's connections
 * at once share one VM, and bad state (an unwritable state directory, a home image that is not
 * one, a corrupt or full filesystem) is refused clearly with nothing left running.
 */
class PersistIT {
    static final Duration SSH_TIMEOUT = Duration.ofSeconds(180);

    @TempDir
    Path dir;

    private ServeProcess serve(String name, Path state) throws Exception {
        return serve(name, state, "128M");
    }

    private ServeProcess serve(String name, Path state, String size) throws Exception {
        return ServeProcess.builder(dir).name("PersistIT-" + name)
                .args("--persist", "home", "--persist-size", size, "--state-dir", state.toString()).start();
    }

    private static SshClientHelper.Result ssh(ServeProcess s, String user, String command) throws Exception {
        return s.ssh().withUser(user).withTimeout(SSH_TIMEOUT).ssh(command);
    }

    /** The documented layout: homes/<first 32 hex digits of SHA-256(user)>/. */
    static Path homeDir(Path state, String user) throws Exception {
        byte[] h = MessageDigest.getInstance("SHA-256").digest(user.getBytes(StandardCharsets.UTF_8));
        return state.resolve("homes").resolve(HexFormat.of().formatHex(h, 0, 16));
    }

    private static void awaitReleased(ServeProcess s, int n) throws Exception {
        s.awaitLogCount("vm_destroyed vm=ssh-", n, Duration.ofSeconds(60));
    }

    @Test
    void aHomeOutlivesConnectionsAndRestartsAndNothingElseDoes() throws Exception {
        Path state = dir.resolve("state");
        try (ServeProcess s = serve("keep", state)) {
            SshClientHelper.Result w = ssh(s, "alice", "echo kept > ~/notes && echo gone > /tmp/scratch && echo gone > /etc/scratch"
                    + " && mkdir -p ~/src && echo deep > ~/src/main.c && echo $HOME");
            assertThat(w.exitCode()).as(w.toString()).isZero();
            String home = w.out().strip();
            assertThat(home).startsWith("/");

            SshClientHelper.Result r = ssh(s, "alice", "cat ~/notes ~/src/main.c; test -e /tmp/scratch && echo tmp-survived;"
                    + " test -e /etc/scratch && echo etc-survived; mount | grep -c ' " + home + " '");
            assertThat(r.exitCode()).as(r.toString()).isZero();
            assertThat(r.out()).isEqualTo("kept\ndeep\n1\n");

            SshClientHelper.Result bob = ssh(s, "bob", "ls -A ~; cat ~/notes");
            assertThat(bob.exitCode()).as("bob has his own, empty home: %s", bob).isNotZero();
            assertThat(bob.out()).isEqualTo("lost+found\n");
            assertThat(bob.err()).contains("notes");
            awaitReleased(s, 3);
            assertThat(s.logLines("home_created")).hasSize(2);
            assertThat(s.logLines("home_released")).hasSize(3);
            Host.assertNothingLeft(s.runtimeRoot(), 15);
            s.sigterm();
            assertThat(s.awaitExit(Duration.ofSeconds(60))).isZero();
        }

        // On disk: a 0700 directory per user named by a hash, files 0600, no user name in any path.
        Path alice = homeDir(state, "alice");
        assertThat(Files.getPosixFilePermissions(state.resolve("homes"))).isEqualTo(PosixFilePermissions.fromString("rwx------"));
        assertThat(Files.getPosixFilePermissions(alice)).isEqualTo(PosixFilePermissions.fromString("rwx------"));
        try (Stream<Path> files = Files.list(alice)) {
            for (Path f : files.toList()) {
                assertThat(Files.getPosixFilePermissions(f, LinkOption.NOFOLLOW_LINKS)).as(f.toString())
                        .isEqualTo(PosixFilePermissions.fromString("rw-------"));
            }
        }
        assertThat(Files.readString(alice.resolve("user"))).isEqualTo("alice");
        try (Stream<Path> all = Files.walk(state)) {
            assertThat(all.map(Path::toString)).noneMatch(p -> p.contains("alice") || p.contains("bob"));
        }
        assertThat(Files.size(alice.resolve("home.ext4"))).isEqualTo(128L << 20);

        // A new server on the same state directory: the home is still there, for a third connection.
        try (ServeProcess s = serve("restart", state)) {
            SshClientHelper.Result r = ssh(s, "alice", "cat ~/notes ~/src/main.c && echo third >> ~/notes");
            assertThat(r.exitCode()).as(r.toString()).isZero();
            assertThat(r.out()).isEqualTo("kept\ndeep\n");
            SshClientHelper.Result again = ssh(s, "alice", "cat ~/notes");
            assertThat(again.out()).isEqualTo("kept\nthird\n");
            assertThat(s.logLines("home_created")).isEmpty();
            awaitReleased(s, 2);
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
    }

    @Test
    void aServerKilledWhileAHomeIsMountedLosesNothingSynced() throws Exception {
        Path state = dir.resolve("state");
        Process client;
        try (ServeProcess s = serve("kill", state)) {
            client = s.ssh().withUser("alice").withTimeout(SSH_TIMEOUT).startSsh(List.of(),
                    "echo synced > ~/notes; sync; echo ready; sleep 300");
            assertThat(new java.io.BufferedReader(new java.io.InputStreamReader(client.getInputStream())).readLine()).isEqualTo("ready");
            s.sigkill();
            s.awaitExit(Duration.ofSeconds(30));
            Host.assertNothingLeftOrReapable(s.runtimeRoot());
        }
        client.destroyForcibly();
        // No SYNC, no freeze: the next mount replays the journal; the lock died with the server.
        try (ServeProcess s = serve("after-kill", state)) {
            SshClientHelper.Result r = ssh(s, "alice", "cat ~/notes; dmesg | grep -c 'recovery complete'");
            assertThat(r.exitCode()).as(r.toString()).isZero();
            assertThat(r.out()).isEqualTo("synced\n1\n");
            awaitReleased(s, 1);
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
    }

    @Test
    void aMachineIsSavedAndResumedWithItsProcessesThreeTimesAndExpires() throws Exception {
        Path state = dir.resolve("state");
        try (ServeProcess s = ServeProcess.builder(dir).name("PersistIT-machine").args("--persist", "machine", "--persist-size", "128M",
                "--state-dir", state.toString()).start()) {
            SshClientHelper.Result first = ssh(s, "alice", "echo 0 > /tmp/cycles; echo home > ~/notes; export NOT_KEPT=1;"
                    + " setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done' </dev/null >/dev/null 2>&1 &"
                    + " sleep 1; cat /tmp/count");
            assertThat(first.exitCode()).as(first.toString()).isZero();
            long count = Long.parseLong(first.out().strip());
            for (int cycle = 1; cycle <= 3; cycle++) {
                s.awaitLogCount("machine_saved", cycle, Duration.ofSeconds(60));
                SshClientHelper.Result r = ssh(s, "alice", "echo " + cycle + " >> /tmp/cycles; cat /tmp/cycles | tr '\\n' ' ';"
                        + " echo; cat ~/notes; cat /tmp/count; sleep 0.5; cat /tmp/count");
                assertThat(r.exitCode()).as(r.toString()).isZero();
                List<String> lines = r.out().lines().toList();
                assertThat(lines.get(0).strip()).as("every earlier change is there").isEqualTo(
                        String.join(" ", java.util.stream.IntStream.rangeClosed(0, cycle).mapToObj(Integer::toString).toList()));
                assertThat(lines.get(1)).isEqualTo("home");
                long before = Long.parseLong(lines.get(2)), after = Long.parseLong(lines.get(3));
                assertThat(before).as("the counter kept counting from where it was").isGreaterThanOrEqualTo(count);
                assertThat(after).as("its process runs").isGreaterThan(before);
                count = after;
            }
            s.awaitLogCount("machine_saved", 4, Duration.ofSeconds(60));
            assertThat(s.logLines("machine_resumed")).hasSize(3);
            assertThat(s.logLines("home_mounted")).as("mounted once: the resumed guests have it").hasSize(1);
            Host.assertNothingLeft(s.runtimeRoot(), 15);
            s.sigterm();
            s.awaitExit(Duration.ofSeconds(60));
        }
        Path home = homeDir(state, "alice");
        assertThat(Files.getPosixFilePermissions(home.resolve("machine"))).isEqualTo(PosixFilePermissions.fromString("rw-------"));

        // Too old to resume: a fresh machine, with the same home.
        try (ServeProcess s = ServeProcess.builder(dir).name("PersistIT-expired").args("--persist", "machine", "--persist-size", "128M",
                "--state-dir", state.toString(), "--resume-within", "1s").start()) {
            Thread.sleep(1500);
            SshClientHelper.Result r = ssh(s, "alice", "cat /tmp/cycles 2>/dev/null || echo fresh; cat ~/notes");
            assertThat(r.out()).isEqualTo("fresh\nhome\n");
            assertThat(r.err()).as("the user is told why, once").contains("vmgate: your saved machine expired (saved ")
                    .contains("kept for 1s): this is a fresh machine, with your home");
            assertThat(s.logLines("machine_expired")).hasSize(1);
            assertThat(s.logLines("machine_resumed")).isEmpty();
            s.awaitLogCount("machine_saved", 1, Duration.ofSeconds(60));
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
    }

    @Test
    void aUserCanAskForAFreshMachineAndKeepsTheirHome() throws Exception {
        Path state = dir.resolve("state");
        try (ServeProcess s = ServeProcess.builder(dir).name("PersistIT-fresh").args("--persist", "machine", "--persist-size", "128M",
                "--state-dir", state.toString()).start()) {
            SshClientHelper.Result first = ssh(s, "alice", "echo old > /tmp/marker; echo home > ~/notes");
            assertThat(first.exitCode()).as(first.toString()).isZero();
            s.awaitLogCount("machine_saved", 1, Duration.ofSeconds(60));

            // ssh -o SetEnv=VMGATE_FRESH=1: the saved machine is discarded, the home kept; the variable is vmgate's, not the guest's.
            SshClientHelper.Result fresh = s.ssh().withUser("alice").withTimeout(SSH_TIMEOUT).withOption("SetEnv=VMGATE_FRESH=1")
                    .ssh("cat /tmp/marker 2>/dev/null || echo fresh; cat ~/notes; echo ${VMGATE_FRESH:-unset}; echo new > /tmp/marker");
            assertThat(fresh.exitCode()).as(fresh.toString()).isZero();
            assertThat(fresh.out()).isEqualTo("fresh\nhome\nunset\n");
            assertThat(s.logLines("machine_discarded")).singleElement().asString().contains("reason=fresh_requested");
            assertThat(s.logLines("machine_resumed")).isEmpty();
            s.awaitLogCount("machine_saved", 2, Duration.ofSeconds(60));

            // The next connection without it resumes the machine saved from the fresh one.
            SshClientHelper.Result again = ssh(s, "alice", "cat /tmp/marker");
            assertThat(again.out()).as(again.toString()).isEqualTo("new\n");
            assertThat(s.logLines("machine_resumed")).hasSize(1);
            s.awaitLogCount("machine_saved", 3, Duration.ofSeconds(60));
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
    }

    @Test
    void savedMachinesBeyondTheLimitsAreEvictedLeastRecentlySavedFirst() throws Exception {
        Path state = dir.resolve("state");
        try (ServeProcess s = ServeProcess.builder(dir).name("PersistIT-evict").args("--persist", "machine", "--persist-size", "128M",
                "--state-dir", state.toString(), "--max-saved", "1").start()) {
            assertThat(ssh(s, "alice", "echo alice > /tmp/marker; echo home > ~/notes").exitCode()).isZero();
            s.awaitLogCount("machine_saved", 1, Duration.ofSeconds(60));
            assertThat(ssh(s, "bob", "echo bob > /tmp/marker").exitCode()).isZero();
            s.awaitLogCount("machine_saved", 2, Duration.ofSeconds(60));
            String evicted = s.awaitLog("machine_evicted", Duration.ofSeconds(30));
            assertThat(evicted).contains("dir=" + homeDir(state, "alice").getFileName()).contains("reason=max_saved")
                    .containsPattern("bytes=[1-9]");
            assertThat(homeDir(state, "alice").resolve("machine")).doesNotExist();
            assertThat(homeDir(state, "bob").resolve("machine")).exists();
            // The operator sees who has a saved machine, its size and age, over the control socket.
            Path sock = s.dir().resolve("control.sock");
            Host.Result homes = Host.run(List.of("./vmgate", "sessions", "--control-socket", sock.toString(), "homes"), Map.of(), null, 120);
            assertThat(homes.exit()).as(homes.stderr()).isZero();
            assertThat(homes.out()).containsPattern("(?m)^alice\\s+" + homeDir(state, "alice").getFileName() + "\\s+128M\\s+\\d+M\\s+\\S+\\s+no\\s+-\\s+-$")
                    .containsPattern("(?m)^bob\\s+" + homeDir(state, "bob").getFileName() + "\\s+128M\\s+\\d+M\\s+\\S+\\s+no\\s+[1-9]\\d*M\\s+\\d+s$");
            Host.Result json = Host.run(List.of("./vmgate", "sessions", "--json", "--control-socket", sock.toString(), "homes"),
                    Map.of(), null, 120);
            assertThat(json.out()).containsPattern("\"user\":\"bob\",[^}]*\"saved_bytes\":[1-9]\\d+,\"saved_at\":\"2\\d{3}-");

            // Alice's machine is gone, her home is not; Bob's (the one just saved) resumes.
            SshClientHelper.Result a = ssh(s, "alice", "cat /tmp/marker 2>/dev/null || echo fresh; cat ~/notes");
            assertThat(a.out()).as(a.toString()).isEqualTo("fresh\nhome\n");
            s.awaitLogCount("machine_saved", 3, Duration.ofSeconds(60));
            s.awaitLogCount("machine_evicted", 2, Duration.ofSeconds(30));
            assertThat(s.logLines("machine_evicted").getLast()).contains("dir=" + homeDir(state, "bob").getFileName());
            assertThat(s.logLines("machine_evicted")).hasSize(2);
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
        // A machine alone larger than the quota is not kept, and says so (a state directory with no other saved machine).
        Path alone = dir.resolve("state-quota");
        try (ServeProcess s = ServeProcess.builder(dir).name("PersistIT-quota").args("--persist", "machine", "--persist-size", "128M",
                "--state-dir", alone.toString(), "--saved-disk-quota", "1M").start()) {
            assertThat(ssh(s, "carol", "echo carol > /tmp/marker").exitCode()).isZero();
            String saved = s.awaitLog("machine_saved", Duration.ofSeconds(60));
            String evicted = s.awaitLog("machine_evicted", Duration.ofSeconds(30));
            assertThat(evicted).contains("dir=" + homeDir(alone, "carol").getFileName()).contains("reason=alone_exceeds_quota");
            assertThat(saved).as("the premise: a saved machine is over 1 MiB").containsPattern("bytes=[1-9][0-9]{6,}");
            assertThat(homeDir(alone, "carol").resolve("machine")).doesNotExist();
            assertThat(s.logLines("machine_evicted")).as("nobody else's for it").hasSize(1);
        }
    }

    @Test
    void theOperatorDiscardsASavedMachine() throws Exception {
        Path state = dir.resolve("state");
        try (ServeProcess s = ServeProcess.builder(dir).name("PersistIT-discard").args("--persist", "machine", "--persist-size", "128M",
                "--state-dir", state.toString()).start()) {
            Path sock = s.dir().resolve("control.sock");
            Path machine = homeDir(state, "alice").resolve("machine");
            Host.Result none = discard(sock, "alice");
            assertThat(none.exit()).as(none.stderr()).isEqualTo(1);
            assertThat(none.stderr()).contains("alice has no saved machine");
            assertThat(homeDir(state, "alice")).as("asking makes no home").doesNotExist();
            Host.Result bad = discard(sock, "");
            assertThat(bad.exit()).isEqualTo(1);
            assertThat(bad.stderr()).as("checked by the server").contains("bad user name: it is empty");

            assertThat(ssh(s, "alice", "echo old > /tmp/marker; echo home > ~/notes").exitCode()).isZero();
            s.awaitLogCount("machine_saved", 1, Duration.ofSeconds(60));
            assertThat(machine).exists();

            // While alice is connected her machine runs: refused, and it is saved as usual when she leaves.
            Process busy = s.ssh().withUser("alice").withTimeout(SSH_TIMEOUT).startSsh(List.of(),
                    "cat /tmp/marker; i=0; while [ ! -e /tmp/go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done");
            s.awaitLog("machine_resumed", Duration.ofSeconds(120));
            Host.Result running = discard(sock, "alice");
            assertThat(running.exit()).as(running.stderr()).isEqualTo(1);
            assertThat(running.stderr()).contains("alice's machine is running").contains("vmgate sessions kill ID");
            assertThat(ssh(s, "alice", "touch /tmp/go").exitCode()).isZero();
            assertThat(busy.waitFor(120, TimeUnit.SECONDS)).isTrue();
            assertThat(new String(busy.getInputStream().readAllBytes(), StandardCharsets.UTF_8)).isEqualTo("old\n");
            s.awaitLogCount("machine_saved", 2, Duration.ofSeconds(60));
            assertThat(s.logLines("machine_discarded")).isEmpty();
            assertThat(machine).exists();

            Host.Result done = discard(sock, "alice");
            assertThat(done.exit()).as(done.stderr()).isZero();
            assertThat(done.out()).isEqualTo("discarded the saved machine of alice (their home is kept)\n");
            assertThat(machine).doesNotExist();
            assertThat(s.logLines("machine_discarded")).singleElement().asString().contains("user=alice")
                    .contains("dir=" + homeDir(state, "alice").getFileName()).contains("reason=operator");
            assertThat(discard(sock, "alice").stderr()).contains("alice has no saved machine");

            // Her next login is a fresh machine with her home.
            SshClientHelper.Result next = ssh(s, "alice", "cat /tmp/marker 2>/dev/null || echo fresh; cat ~/notes");
            assertThat(next.out()).as(next.toString()).isEqualTo("fresh\nhome\n");
            assertThat(s.logLines("machine_resumed")).hasSize(1);
            s.awaitLogCount("machine_saved", 3, Duration.ofSeconds(60));
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
    }

    private static Host.Result discard(Path sock, String user) throws Exception {
        return Host.run(List.of("./vmgate", "sessions", "--control-socket", sock.toString(), "discard", user), Map.of(), null, 120);
    }

    @Test
    void aUsersConnectionsAtOnceShareOneVm() throws Exception {
        Path state = dir.resolve("state");
        try (ServeProcess s = serve("share", state)) {
            // The first connection marks its VM in /tmp (not persisted) and waits for the second.
            Process first = s.ssh().withUser("alice").withTimeout(SSH_TIMEOUT).startSsh(List.of(),
                    "echo first > /tmp/marker; i=0; while [ ! -e ~/from-second ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done;"
                            + " cat ~/from-second");
            s.awaitLog("home_mounted", Duration.ofSeconds(120));
            Path sock = s.dir().resolve("control.sock");
            Host.Result homes = Host.run(List.of("./vmgate", "sessions", "--control-socket", sock.toString(), "homes"), Map.of(), null, 120);
            assertThat(homes.exit()).as(homes.stderr()).isZero();
            assertThat(homes.out()).startsWith("USER").containsPattern("alice\\s+" + homeDir(state, "alice").getFileName()
                    + "\\s+128M\\s+\\d+M\\s+\\S+\\s+yes");
            // written whole, then renamed: the first connection polls for the name and must not read a half-written file
            SshClientHelper.Result second = ssh(s, "alice", "cat /tmp/marker; echo second > ~/.second && mv ~/.second ~/from-second");
            assertThat(second.exitCode()).as(second.toString()).isZero();
            assertThat(second.out()).as("the second connection is in the first one's VM").isEqualTo("first\n");
            assertThat(first.waitFor(120, TimeUnit.SECONDS)).isTrue();
            assertThat(new String(first.getInputStream().readAllBytes(), StandardCharsets.UTF_8)).isEqualTo("second\n");
            assertThat(first.exitValue()).isZero();

            List<String> assigned = s.logLines("vm_assigned .*user=alice");
            assertThat(assigned).hasSize(2);
            String vm = assigned.get(0).replaceAll(".* vm=(\\S+).*", "$1");
            assertThat(assigned.get(1)).contains("vm=" + vm);
            assertThat(s.logLines("home_mounted")).hasSize(1);
            awaitReleased(s, 1);
            assertThat(s.logLines("home_released")).hasSize(1);
            Host.Result json = Host.run(List.of("./vmgate", "sessions", "--json", "--control-socket", sock.toString(), "homes"),
                    Map.of(), null, 120);
            assertThat(json.out()).contains("\"user\":\"alice\"").contains("\"in_use\":false");

            // After both left, the next connection gets a new VM with the same home.
            SshClientHelper.Result third = ssh(s, "alice", "cat ~/from-second; test -e /tmp/marker && echo same-vm");
            assertThat(third.out()).isEqualTo("second\n");
            awaitReleased(s, 2);
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
    }

    @Test
    void aGuestUserWhoIsNotRootOwnsTheirHome() throws Exception {
        Path tree = io.vmgate.image.TestRootfs.busyboxTree(Files.createDirectories(dir.resolve("tree")));
        Path state = dir.resolve("state");
        try (ServeProcess s = ServeProcess.builder(dir).name("PersistIT-user").args("--persist", "home", "--persist-size", "128M",
                "--state-dir", state.toString(), "--rootfs", tree.toString(), "--guest-user", "alice").start()) {
            SshClientHelper.Result w = ssh(s, "erin", "id -u; pwd; stat -c %u:%g ~; echo mine > ~/notes; mkdir ~/d && echo in > ~/d/f");
            assertThat(w.exitCode()).as(w.toString()).isZero();
            assertThat(w.out()).isEqualTo("1000\n/home/alice\n1000:1000\n");
            SshClientHelper.Result r = ssh(s, "erin", "cat ~/notes ~/d/f; stat -c %u:%g ~/notes; touch /etc/x 2>/dev/null || echo no-root");
            assertThat(r.out()).isEqualTo("mine\nin\n1000:1000\nno-root\n");
            assertThat(s.logLines("home_mounted")).allMatch(l -> l.contains("path=/home/alice"));
            awaitReleased(s, 2);
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
    }

    @Test
    void perUserInTheConfigFile() throws Exception {
        Path state = dir.resolve("state");
        Path conf = Files.writeString(dir.resolve("serve.conf"), "persist-size = 128M\nstate-dir = " + state + "\npersist.alice = home\n");
        try (ServeProcess s = ServeProcess.builder(dir).name("PersistIT-config").args("--config", conf.toString()).start()) {
            for (String user : List.of("alice", "bob")) {
                assertThat(ssh(s, user, "echo mine > ~/notes").exitCode()).isZero();
            }
            assertThat(ssh(s, "alice", "cat ~/notes").out()).isEqualTo("mine\n");
            SshClientHelper.Result bob = ssh(s, "bob", "cat ~/notes");
            assertThat(bob.exitCode()).as("bob's home is not kept: %s", bob).isNotZero();
            assertThat(s.logLines("home_mounted")).hasSize(2).allMatch(l -> l.contains("user=alice"));
            assertThat(Files.exists(homeDir(state, "alice").resolve("home.ext4"))).isTrue();
            assertThat(Files.exists(homeDir(state, "bob"))).isFalse();
            awaitReleased(s, 4);
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
    }

    @Test
    void aStateDirectoryThatCannotBeWrittenStopsTheServer() throws Exception {
        Path file = Files.writeString(dir.resolve("not-a-directory"), "x");
        Path rt = dir.resolve("rt-bad");
        Host.Result r = Host.run(List.of("./vmgate", "serve", "--listen", "127.0.0.1:" + ServeProcess.freePort(),
                "--host-key", dir.resolve("hk").toString(), "--persist", "home", "--state-dir", file.resolve("state").toString()),
                Map.of("VMGATE_RUNTIME_DIR", rt.toString()), null, 300);
        assertThat(r.exit()).as(r.stderr()).isNotZero();
        assertThat(r.stderr()).contains("cannot keep persistent homes in " + file.resolve("state").resolve("homes"))
                .contains("--state-dir");
        assertThat(Files.readString(file)).isEqualTo("x");
        Host.assertNothingLeft(rt, 15);

        Host.Result bad = Host.run(List.of("./vmgate", "serve", "--listen", "127.0.0.1:" + ServeProcess.freePort(),
                "--host-key", dir.resolve("hk").toString(), "--persist", "machine", "--no-snapshot"),
                Map.of("VMGATE_RUNTIME_DIR", rt.toString()), null, 300);
        assertThat(bad.exit()).isNotZero();
        assertThat(bad.stderr()).contains("persist machine needs snapshot restores");
        Host.assertNothingLeft(rt, 15);
    }

    @Test
    void aBrokenHomeIsRefusedClearlyAndKept() throws Exception {
        Path state = dir.resolve("state");
        try (ServeProcess s = serve("broken", state)) {
            assertThat(ssh(s, "alice", "echo precious > ~/notes").exitCode()).isZero();
            awaitReleased(s, 1);
            Path image = homeDir(state, "alice").resolve("home.ext4");

            // Not a filesystem at all (its superblock's magic overwritten): refused before any VM starts.
            byte[] magic = patch(image, 1024 + 56, new byte[] {0, 0});
            SshClientHelper.Result r = ssh(s, "alice", "echo should-not-run");
            assertThat(r.exitCode()).isNotZero();
            assertThat(r.out()).isEmpty();
            assertThat(r.err()).contains("persistent home of alice").contains("no ext4 filesystem");
            patch(image, 1024 + 56, magic);

            // A superblock whose checksum fails: the guest's mount refuses it, the session is refused.
            byte[] volumeName = patch(image, 1024 + 120, "garbage!".getBytes(StandardCharsets.US_ASCII));
            SshClientHelper.Result m = ssh(s, "alice", "echo should-not-run");
            assertThat(m.exitCode()).isNotZero();
            assertThat(m.out()).isEmpty();
            assertThat(m.err()).contains("cannot mount the persistent home of alice").contains("mount:");
            assertThat(r.err() + m.err()).as("no host path reaches the user").doesNotContain(state.toString());
            assertThat(s.logLines("home_mount_failed")).hasSize(1);
            Host.assertNothingLeft(s.runtimeRoot(), 15);
            patch(image, 1024 + 120, volumeName);

            // The wrong size (a server started with another --persist-size): refused, naming both sizes.
            try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
                f.setLength(256L << 20);
            }
            SshClientHelper.Result size = ssh(s, "alice", "true");
            assertThat(size.exitCode()).isNotZero();
            assertThat(size.err()).contains("256M but homes are 128M");
            try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
                f.setLength(128L << 20);
            }

            // Nothing was lost or locked by the refusals: repaired, the home works as before.
            SshClientHelper.Result ok = ssh(s, "alice", "cat ~/notes");
            assertThat(ok.exitCode()).as(ok.toString()).isZero();
            assertThat(ok.out()).isEqualTo("precious\n");
            awaitReleased(s, 2);
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
    }

    @Test
    void aFullHomeFailsWritesNotLogins() throws Exception {
        Path state = dir.resolve("state");
        try (ServeProcess s = serve("full", state, "64M")) {
            SshClientHelper.Result fill = ssh(s, "carol", "echo small > ~/keep; dd if=/dev/zero of=$HOME/big bs=1M count=100 2>&1; sync");
            assertThat(fill.out()).contains("No space left on device");
            SshClientHelper.Result again = ssh(s, "carol", "cat ~/keep && rm ~/big && echo more > ~/after && cat ~/after");
            assertThat(again.exitCode()).as(again.toString()).isZero();
            assertThat(again.out()).isEqualTo("small\nmore\n");
            awaitReleased(s, 2);
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
        assertThat(Files.size(homeDir(state, "carol").resolve("home.ext4"))).isEqualTo(64L << 20);
    }

    private ServeProcess machineServe(String name, Path state, String... extra) throws Exception {
        List<String> args = new java.util.ArrayList<>(List.of("--persist", "machine", "--persist-size", "128M",
                "--state-dir", state.toString()));
        args.addAll(List.of(extra));
        return ServeProcess.builder(dir).name("PersistIT-" + name).args(args.toArray(String[]::new)).start();
    }

    @Test
    void aServerKilledMidSaveLeavesTheHomeAndNoTornMachine() throws Exception {
        Path state = dir.resolve("state");
        Path home = homeDir(state, "alice");
        Path tmp = home.resolve("machine.tmp");
        try (ServeProcess s = machineServe("kill-save", state)) {
            assertThat(ssh(s, "alice", "echo first > ~/notes; echo machine > /tmp/marker").exitCode()).isZero();
            s.awaitLogCount("machine_saved", 1, Duration.ofSeconds(60));
            // The save of a resumed machine is the one killed (e2b's failure mode is the second resume).
            SshClientHelper.Result r = ssh(s, "alice", "cat /tmp/marker; echo second >> ~/notes");
            assertThat(r.out()).as(r.toString()).isEqualTo("machine\n");
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (!Files.exists(tmp)) {
                assertThat(System.nanoTime()).as("a save began").isLessThan(deadline);
                Thread.sleep(1);
            }
            s.sigkill();
            s.awaitExit(Duration.ofSeconds(30));
            assertThat(tmp).as("the kill landed mid-save").exists();
            assertThat(home.resolve("machine")).as("a save cut short is never published").doesNotExist();
            Host.assertNothingLeftOrReapable(s.runtimeRoot());
        }
        try (ServeProcess s = machineServe("after-kill-save", state)) {
            SshClientHelper.Result r = ssh(s, "alice", "cat /tmp/marker 2>/dev/null || echo fresh; cat ~/notes; echo third > /tmp/marker");
            assertThat(r.exitCode()).as(r.toString()).isZero();
            assertThat(r.out()).as("a fresh machine, with every write to the home (synced before the save began)")
                    .isEqualTo("fresh\nfirst\nsecond\n");
            assertThat(s.logLines("machine_save_incomplete")).hasSize(1);
            assertThat(tmp).doesNotExist();
            // And the next save and resume work as ever.
            s.awaitLogCount("machine_saved", 1, Duration.ofSeconds(60));
            SshClientHelper.Result again = ssh(s, "alice", "cat /tmp/marker");
            assertThat(again.out()).as(again.toString()).isEqualTo("third\n");
            assertThat(s.logLines("machine_resumed")).hasSize(1);
            s.awaitLogCount("machine_saved", 2, Duration.ofSeconds(60));
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
    }

    @Test
    void aMachineSavedForAnotherConfigurationIsSetAsideAndTheUserToldWhy() throws Exception {
        Path state = dir.resolve("state");
        Path home = homeDir(state, "alice");
        try (ServeProcess s = machineServe("before-change", state)) {
            assertThat(ssh(s, "alice", "echo old > /tmp/marker; echo home > ~/notes").exitCode()).isZero();
            s.awaitLogCount("machine_saved", 1, Duration.ofSeconds(60));
        }
        // The operator gave guests more memory: the saved machine's template key is not this server's.
        try (ServeProcess s = machineServe("after-change", state, "--memory", "192")) {
            SshClientHelper.Result r = ssh(s, "alice", "cat /tmp/marker 2>/dev/null || echo fresh; cat ~/notes");
            assertThat(r.exitCode()).as(r.toString()).isZero();
            assertThat(r.out()).isEqualTo("fresh\nhome\n");
            assertThat(r.err().lines().filter(l -> l.startsWith("vmgate:")).toList()).singleElement().asString()
                    .startsWith("vmgate: your saved machine did not resume (the saved machine was made with another image")
                    .endsWith("this is a fresh machine, with your home; the saved one is kept for the operator");
            assertThat(s.logLines("machine_resume_failed")).singleElement().asString().contains("kept=machine.failed-");
            assertThat(s.logLines("user_notified")).hasSize(1);
            try (Stream<Path> files = Files.list(home)) {
                assertThat(files.map(p -> p.getFileName().toString())).anyMatch(n -> n.startsWith("machine.failed-"));
            }
            // Its own machine, saved under this configuration, resumes with nothing to say.
            s.awaitLogCount("machine_saved", 1, Duration.ofSeconds(60));
            SshClientHelper.Result again = ssh(s, "alice", "echo resumed");
            assertThat(again.out()).isEqualTo("resumed\n");
            assertThat(again.err()).doesNotContain("vmgate:");
            assertThat(s.logLines("machine_resumed")).hasSize(1);
            assertThat(s.logLines("user_notified")).hasSize(1);
            s.awaitLogCount("machine_saved", 2, Duration.ofSeconds(60));

            // A state that does not restore (here: not a state at all): the user hears that, without host paths; the log has why.
            Files.writeString(home.resolve("machine"), "garbage");
            SshClientHelper.Result broken = ssh(s, "alice", "cat ~/notes");
            assertThat(broken.out()).as(broken.toString()).isEqualTo("home\n");
            assertThat(broken.err()).contains("vmgate: your saved machine did not resume (it could not be restored): this is a fresh machine")
                    .doesNotContain(state.toString());
            assertThat(s.logLines("machine_resume_failed")).hasSize(2).last().asString().contains("cannot be read");
            try (Stream<Path> files = Files.list(home)) {
                assertThat(files.map(p -> p.getFileName().toString()).filter(n -> n.startsWith("machine.failed-")))
                        .as("only the latest failed state is kept").singleElement().satisfies(n ->
                                assertThat(Files.readString(home.resolve(n))).isEqualTo("garbage"));
            }
            s.awaitLogCount("machine_saved", 3, Duration.ofSeconds(60));
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
    }

    @Test
    void aTmuxSessionAndItsEnvironmentSurviveThreeDisconnects() throws Exception {
        io.vmgate.image.RootfsImage debian = io.vmgate.image.TestRootfs.debian(); // bookworm with tmux
        Path state = dir.resolve("state");
        try (ServeProcess s = machineServe("tmux", state, "--image", debian.directory().toString())) {
            SshClientHelper ssh = s.ssh().withUser("alice").withTimeout(SSH_TIMEOUT);
            List<String> cmd = new java.util.ArrayList<>(List.of("env", "TERM=xterm", "ssh"));
            cmd.addAll(ssh.commonOptions());
            cmd.addAll(List.of("-t", ssh.destination()));
            String line = String.join(" ", cmd.stream().map(SshPtyIT::q).toList());
            // The first connection starts tmux, exports a variable in its shell, and detaches.
            try (Tmux t = new Tmux(dir, line, 100, 30)) {
                t.await(sc -> sc.contains("#"), 180, "a shell prompt");
                t.type("tmux new-session -s work");
                t.await(sc -> sc.contains("[work]"), 30, "tmux's status line");
                t.type("export KEPT=v0; echo started-$KEPT");
                t.await(sc -> sc.contains("started-v0"), 30, "the variable set");
                t.keys("C-b", "d");
                t.await(sc -> sc.contains("[detached"), 30, "tmux to detach");
                t.type("exit");
                awaitEnded(t, "ssh to end");
            }
            for (int c = 1; c <= 3; c++) {
                int cycle = c;
                s.awaitLogCount("machine_saved", cycle, Duration.ofSeconds(120));
                // Each connection attaches to the same tmux session: its shell still has every export.
                try (Tmux t = new Tmux(dir, line + " tmux attach -t work", 100, 30)) {
                    String expected = "v0" + "-1-2-3".substring(0, 2 * (cycle - 1));
                    t.type("clear; echo \"seen=$KEPT.\"");
                    t.await(sc -> sc.contains("seen=" + expected + "."), 60, "the variable exported before cycle " + cycle);
                    t.type("export KEPT=$KEPT-" + cycle + "; echo \"set=$KEPT.\"");
                    t.await(sc -> sc.contains("set=" + expected + "-" + cycle + "."), 60, "the variable exported in cycle " + cycle);
                    t.keys("C-b", "d");
                    awaitEnded(t, "ssh to end when tmux detaches");
                }
            }
            s.awaitLogCount("machine_saved", 4, Duration.ofSeconds(120));
            assertThat(s.logLines("machine_resumed")).hasSize(3);
            assertThat(s.logLines("machine_resume_failed")).isEmpty();
            Host.assertNothingLeft(s.runtimeRoot(), 15);
        }
    }

    private static void awaitEnded(Tmux t, String what) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (!t.paneDead()) {
            assertThat(System.nanoTime()).as("%s; screen:%n%s", what, t.screen()).isLessThan(deadline);
            Thread.sleep(100);
        }
    }

    /** Writes {@code bytes} at {@code offset}; returns what was there. */
    private static byte[] patch(Path file, long offset, byte[] bytes) throws Exception {
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            byte[] old = new byte[bytes.length];
            f.seek(offset);
            f.readFully(old);
            f.seek(offset);
            f.write(bytes);
            return old;
        }
    }
}
