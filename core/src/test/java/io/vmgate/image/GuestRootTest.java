package io.vmgate.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;

/** Users from the image's passwd and group, checked against its files. */
class GuestRootTest {
    static final String PASSWD = """
            root:x:0:0:root:/root:/bin/bash
            daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
            alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
            bob:x:1001:1001::/home/bob:
            broken:x:notanumber:1::/:/bin/sh
            zed:x:1002:1002::/home/zed:/bin/zsh
            +nis
            """;
    static final String GROUP = """
            root:x:0:
            sudo:x:27:alice,bob
            audio:x:29:carol,alice
            bad:x:nope:alice
            alice:x:1000:
            """;

    GuestRoot root(Optional<String> passwd) {
        Manifest.Builder b = new Manifest.Builder();
        b.add("", FsEntry.directory("", 0755, 0, 0, 0));
        b.add("bin", FsEntry.directory("bin", 0755, 0, 0, 0));
        b.add("bin/bash", FsEntry.file("bin/bash", 0755, 0, 0, 1, 0));
        b.add("bin/sh", FsEntry.symlink("bin/sh", "bash", 0, 0, 0));
        b.add("home", FsEntry.directory("home", 0755, 0, 0, 0));
        b.add("home/alice", FsEntry.directory("home/alice", 0700, 1000, 1000, 0));
        return new GuestRoot(b.build(), passwd, Optional.of(GROUP), "image test");
    }

    @Test
    void usersCarryTheirGroupsHomeAndShell() throws ImageException {
        GuestUser alice = root(Optional.of(PASSWD)).user("alice");
        assertThat(alice).isEqualTo(new GuestUser("alice", 1000, 1000, List.of(1000L, 27L, 29L), "/home/alice", "/bin/bash"));
        GuestUser bob = root(Optional.of(PASSWD)).user("bob");
        assertThat(bob.shell()).as("an empty shell is /bin/sh (passwd(5))").isEqualTo("/bin/sh");
        assertThat(bob.groups()).containsExactly(1001L, 27L);
        assertThat(root(Optional.of(PASSWD)).user("root").isRoot()).isTrue();
        assertThat(root(Optional.of(PASSWD)).isDirectory("/home/alice")).isTrue();
        assertThat(root(Optional.of(PASSWD)).isDirectory("/home/bob")).isFalse();
        assertThat(root(Optional.of(PASSWD)).users()).containsExactly("root", "alice", "bob", "broken", "zed");
    }

    @Test
    void missingUsersAndShellsAreErrorsNamingTheImage() {
        assertThatThrownBy(() -> root(Optional.of(PASSWD)).user("carol")).hasMessage(
                "no user 'carol' in the /etc/passwd of image test (users with a shell: root, alice, bob, broken, zed)");
        assertThatThrownBy(() -> root(Optional.of(PASSWD)).user("zed")).hasMessageContaining("the shell of user zed, /bin/zsh, is not in image test");
        assertThatThrownBy(() -> root(Optional.of(PASSWD)).user("daemon")).hasMessageContaining("/usr/sbin/nologin, is not in");
        assertThatThrownBy(() -> root(Optional.of(PASSWD)).user("broken")).hasMessageContaining("uid 'notanumber'");
        assertThatThrownBy(() -> root(Optional.empty()).user("alice")).hasMessageContaining("has no /etc/passwd");
    }

    @Test
    void withoutPasswdRootStillLogsIn() throws ImageException {
        assertThat(root(Optional.empty()).user("root")).isEqualTo(GuestUser.ROOT);
    }

    @Test
    void usersAsContainerImagesNameThemUidsGroupsAndUnknownUids() throws ImageException {
        GuestRoot r = root(Optional.of(PASSWD));
        assertThat(r.user("1000")).as("a listed uid is that user").isEqualTo(r.user("alice"));
        assertThat(r.user("alice:sudo")).isEqualTo(new GuestUser("alice", 1000, 27, List.of(27L, 29L), "/home/alice", "/bin/bash"));
        assertThat(r.user("1000:4242").groups()).containsExactly(4242L, 27L, 29L);
        assertThat(r.user("4321")).as("an unlisted uid: gid 0, home /, /bin/sh, as runc does")
                .isEqualTo(new GuestUser("4321", 4321, 0, List.of(0L), "/", "/bin/sh"));
        assertThat(r.user("4321:77")).isEqualTo(new GuestUser("4321", 4321, 77, List.of(77L), "/", "/bin/sh"));
        assertThat(root(Optional.empty()).user("65534").uid()).isEqualTo(65534);
        assertThatThrownBy(() -> r.user("alice:nogroup")).hasMessage("no group 'nogroup' in the /etc/group of image test");
        assertThatThrownBy(() -> r.user("99999999999")).hasMessageContaining("is not a valid uid");
    }
}
