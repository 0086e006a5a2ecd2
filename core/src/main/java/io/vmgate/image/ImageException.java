package io.vmgate.image;

/** An image could not be built or loaded; the message names the missing piece and how to get it. */
public class ImageException extends Exception {
    public ImageException(String message) {
        super(message);
    }

    public ImageException(String message, Throwable cause) {
        super(message, cause);
    }
}
