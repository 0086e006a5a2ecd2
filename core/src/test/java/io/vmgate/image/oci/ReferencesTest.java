package io.vmgate.image.oci;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Image references as docker reads them, registry challenges, credentials files, digests. */
class ReferencesTest {
    @TempDir
    Path tmp;

    @Test
    void referencesGetDockerHubsDefaults() {
        ImageReference u = ImageReference.parse("ubuntu");
        assertThat(u.toString()).isEqualTo("docker.io/library/ubuntu:latest");
        assertThat(u.apiHost()).isEqualTo("registry-1.docker.io");
        assertThat(u.defaultName()).isEqualTo("ubuntu");
        assertThat(ImageReference.parse("bitnami/redis:7.2").toString()).isEqualTo("docker.io/bitnami/redis:7.2");
        assertThat(ImageReference.parse("bitnami/redis:7.2").defaultName()).isEqualTo("redis-7.2");
        ImageReference local = ImageReference.parse("127.0.0.1:5000/team/app:v1");
        assertThat(local.registry()).isEqualTo("127.0.0.1:5000");
        assertThat(local.repository()).isEqualTo("team/app");
        assertThat(local.hostName()).isEqualTo("127.0.0.1");
        assertThat(ImageReference.parse("localhost/app").registry()).isEqualTo("localhost");
        String d = "sha256:" + "a".repeat(64);
        ImageReference pinned = ImageReference.parse("ghcr.io/o/app@" + d);
        assertThat(pinned.manifestReference()).isEqualTo(d);
        assertThat(ImageReference.parse("index.docker.io/library/alpine:3").registry()).isEqualTo("docker.io");
        assertThatThrownBy(() -> ImageReference.parse("Ubuntu")).hasMessageContaining("is not a repository name component");
        assertThatThrownBy(() -> ImageReference.parse("a/../b")).hasMessageContaining("is not a repository name component");
        assertThatThrownBy(() -> ImageReference.parse("app@sha256:../../etc")).hasMessageContaining("is not a sha256 or sha512 digest");
        assertThatThrownBy(() -> ImageReference.parse("app:bad tag")).hasMessageContaining("is not a tag");
    }

    @Test
    void challengesAreReadStrictly() {
        Challenge c = Challenge.pick(List.of("Basic realm=\"x\"",
                "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/ubuntu:pull\"")).get();
        assertThat(c.scheme()).isEqualTo("bearer");
        assertThat(c.params()).containsEntry("realm", "https://auth.docker.io/token").containsEntry("service", "registry.docker.io")
                .containsEntry("scope", "repository:library/ubuntu:pull");
        assertThat(Challenge.parse("Bearer realm=\"a\\\"b\", error=insufficient_scope").get().params())
                .containsEntry("realm", "a\"b").containsEntry("error", "insufficient_scope");
        assertThat(Challenge.parse("Bearer realm=\"unterminated")).isEmpty();
        assertThat(Challenge.pick(List.of("", "   "))).isEmpty();
    }

    @Test
    void credentialsComeFromTheAuthFileWithDockerHubsAliases() throws Exception {
        Path f = Files.writeString(tmp.resolve("config.json"), "{\"auths\":{\"https://index.docker.io/v1/\":{\"auth\":\"dTpw\"},"
                + "\"127.0.0.1:5000\":{\"auth\":\"YWxpY2U6czNjcjp0\"}},\"credsStore\":\"desktop\"}");
        Credentials c = Credentials.fromEnvironment(Map.of("REGISTRY_AUTH_FILE", f.toString()));
        assertThat(c.forRegistry("docker.io")).contains(new Credentials.Login("u", "p"));
        assertThat(c.forRegistry("127.0.0.1:5000")).contains(new Credentials.Login("alice", "s3cr:t"));
        assertThat(c.forRegistry("ghcr.io")).isEmpty();
        assertThat(c.describe()).contains("credential helpers are not used");
        assertThat(new Credentials.Login("alice", "s3cr:t").toString()).doesNotContain("s3cr");
        Path home = Files.createDirectories(tmp.resolve("home/.docker"));
        Files.writeString(home.resolve("config.json"), "{\"auths\":{\"docker.io\":{\"auth\":\"dTpw\"}}}");
        assertThat(Credentials.fromEnvironment(Map.of("HOME", tmp.resolve("home").toString())).forRegistry("docker.io")).isPresent();
        assertThat(Credentials.fromEnvironment(Map.of("HOME", tmp.resolve("nowhere").toString())).forRegistry("docker.io")).isEmpty();
        assertThatThrownBy(() -> Credentials.fromEnvironment(Map.of("REGISTRY_AUTH_FILE", tmp.resolve("missing.json").toString())))
                .hasMessageContaining("does not exist");
        Files.writeString(f, "{\"auths\":{\"docker.io\":{\"auth\":\"!!!\"}}}");
        assertThatThrownBy(() -> Credentials.fromEnvironment(Map.of("REGISTRY_AUTH_FILE", f.toString())).forRegistry("docker.io"))
                .hasMessageContaining("are not base64");
    }

    @Test
    void digestsNeverBecomePaths() {
        assertThatThrownBy(() -> Digest.parse("sha256:" + "A".repeat(64))).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> Digest.parse("md5:abc")).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> Digest.parse("sha256:../" + "a".repeat(61))).isInstanceOf(IllegalArgumentException.class);
        assertThat(Digest.parse("sha512:" + "0".repeat(128)).algorithm()).isEqualTo("sha512");
    }
}
