package io.vmgate.image.oci;

import io.vmgate.image.ImageException;

/** An OCI image cannot be imported or pulled; the message names the image and the cause. */
public final class OciException extends ImageException {
    public OciException(String message) {
        super(message);
    }

    public OciException(String message, Throwable cause) {
        super(message, cause);
    }
}
