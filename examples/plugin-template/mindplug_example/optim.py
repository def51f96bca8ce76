"""Sign SGD as a MindSpore optimizer. The engine passes params and lr (a float, or one rate per step) and
advances global_step after every update, so get_lr() follows the schedule."""
import mindspore.nn as nn
import mindspore.ops as ops


class SignSGD(nn.Optimizer):
    def __init__(self, params, learning_rate=0.01, weight_decay=0.0, loss_scale=1.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        self.assign = ops.Assign()
        self.sign = ops.Sign()

    def construct(self, gradients):
        gradients = self.flatten_gradients(gradients)
        gradients = self.decay_weight(gradients)
        gradients = self.scale_grad(gradients)
        lr = self.get_lr()
        for param, grad in zip(self._parameters, gradients):
            self.assign(param, param - lr * self.sign(grad))
        return True


def signsgd(params, lr=0.01, *, weight_decay=0.0, weight_decay_filter="disable"):
    """Step every weight by -lr * sign(gradient)."""
    if weight_decay_filter != "disable":
        raise ValueError("signsgd supports only weight_decay_filter='disable'")
    return SignSGD(params, lr, weight_decay)
