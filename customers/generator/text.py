"""Support-conversation text for the demo store: many phrasings per topic, in English and Chinese.

A message is assembled from an opener (what happened), an optional closer whose intensity the
simulator chooses (a mild request or a threat to leave), and light noise (typos, lower case,
emoji), so that no single keyword gives the topic or the outcome away.
"""

from __future__ import annotations

import numpy as np

TOPICS = ("late_delivery", "refund_trouble", "price_complaint", "product_defect", "praise", "question")
COMPLAINT_TOPICS = frozenset({"late_delivery", "refund_trouble", "price_complaint", "product_defect"})

PRODUCTS: dict[str, list[tuple[str, str]]] = {
    "electronics": [("headphones", "耳机"), ("phone charger", "手机充电器"), ("smart watch", "智能手表")],
    "fashion": [("winter jacket", "冬季外套"), ("running shoes", "跑鞋"), ("jeans", "牛仔裤"), ("handbag", "手提包")],
    "home": [("coffee maker", "咖啡机"), ("bed sheets", "床单"), ("desk lamp", "台灯"), ("frying pan", "平底锅")],
    "beauty": [("face cream", "面霜"), ("perfume", "香水"), ("hair dryer", "吹风机")],
    "sports": [("yoga mat", "瑜伽垫"), ("dumbbells", "哑铃"), ("bike helmet", "自行车头盔")],
    "books": [("cookbook", "菜谱"), ("kids' book set", "儿童绘本套装")],
    "toys": [("building blocks set", "积木套装"), ("board game", "桌游")],
    "grocery": [("coffee beans", "咖啡豆"), ("green tea", "绿茶")],
}

OPENERS: dict[str, dict[str, list[str]]] = {
    "en": {
        "late_delivery": [
            "Hi, my order {order} still hasn't arrived. It's been {days} days.",
            "Where is my package?? Order {order} was supposed to be here last week.",
            "hello, tracking for {order} hasn't updated in {days} days. what is going on",
            "I ordered the {product} {days} days ago and it's still not here.",
            "My delivery is late again. Order number {order}.",
            "The courier says delivered but I never got order {order}.",
            "Can you check order {order}? The estimated date passed {days} days ago.",
            "Still waiting on my {product}. This is the second late delivery this month.",
            "Parcel stuck in the depot for {days} days now, order {order}.",
        ],
        "refund_trouble": [
            "I returned the {product} {days} days ago and still no refund.",
            "Where is my refund for order {order}? You confirmed receiving the return.",
            "I was charged twice for order {order} and nobody is fixing it.",
            "The refund of ${amount} still isn't on my card.",
            "Your return label doesn't work and I can't send back the {product}.",
            "I've asked three times about my refund for {order}.",
            "Why was my refund only partial? I sent everything back in the original box.",
            "Return for {order} shows 'received' for {days} days but no money back.",
        ],
        "price_complaint": [
            "Why did the price of the {product} go up by ${amount} overnight?",
            "I found the same {product} ${amount} cheaper on another site.",
            "Shipping costs are way too high now.",
            "I bought the {product} last week and now it's on sale. Can I get the difference?",
            "Your prices used to be good, now everything is more expensive.",
            "The discount code didn't apply to order {order}.",
            "Free shipping minimum went up again? Seriously?",
            "Paid ${amount} for the {product}, my friend got it for much less a day later.",
        ],
        "product_defect": [
            "The {product} I received is broken.",
            "The {product} stopped working after {days} days.",
            "Order {order}: the {product} arrived damaged, box was crushed.",
            "Wrong size sent for the {product}.",
            "The {product} looks nothing like the photos.",
            "Missing parts in my {product} (order {order}).",
            "second {product} in a row that is faulty",
        ],
        "praise": [
            "Just wanted to say the {product} is great, thanks!",
            "Super fast delivery, got order {order} in {days} days.",
            "Your support team was really helpful last time, thank you.",
            "Love the {product}! Will order again.",
            "Great prices during the sale, bought gifts for the whole family.",
            "Best online store I've used, everything arrived perfectly.",
            "The {product} exceeded my expectations.",
        ],
        "question": [
            "Do you ship internationally?",
            "How do I change the delivery address for order {order}?",
            "Is the {product} available in another color?",
            "Can I pay with PayPal?",
            "When will the {product} be back in stock?",
            "How do I update my email address?",
            "Do you offer gift wrapping for the {product}?",
            "Is there a warranty on the {product}?",
        ],
    },
    "zh": {
        "late_delivery": [
            "你好，我的订单{order}到现在还没到，已经{days}天了。",
            "我的包裹到底在哪里？订单{order}上周就应该到了。",
            "物流信息{days}天都没有更新了，怎么回事？",
            "我{days}天前买的{product}还没收到。",
            "又延迟发货了，订单号{order}。",
            "快递显示已签收，但我根本没收到订单{order}。",
            "订单{order}的预计送达时间已经过了{days}天。",
        ],
        "refund_trouble": [
            "我{days}天前就把{product}退回去了，退款还没到账。",
            "订单{order}的退款去哪了？你们已经确认收到退货了。",
            "订单{order}被重复扣款了，一直没人处理。",
            "{amount}元的退款到现在还没退到我的卡上。",
            "退货标签用不了，{product}没办法寄回。",
            "我已经问了三次订单{order}的退款了。",
        ],
        "price_complaint": [
            "{product}怎么一夜之间涨了{amount}元？",
            "同样的{product}别的网站便宜{amount}元。",
            "现在运费也太贵了吧。",
            "我上周刚买的{product}现在就降价了，能补差价吗？",
            "你们以前价格挺好的，现在什么都变贵了。",
            "订单{order}用不了优惠码。",
        ],
        "product_defect": [
            "收到的{product}是坏的。",
            "{product}用了{days}天就坏了。",
            "订单{order}的{product}到货时就损坏了，箱子都压扁了。",
            "{product}发错尺码了。",
            "{product}和图片完全不一样。",
            "{product}少了零件。",
        ],
        "praise": [
            "{product}非常好用，谢谢！",
            "订单{order}发货速度超快，{days}天就到了。",
            "上次客服帮了我大忙，非常感谢。",
            "很喜欢这个{product}！还会再来买的。",
            "促销的时候价格很划算，给全家都买了礼物。",
            "用过最好的网店，东西都完好无损。",
        ],
        "question": [
            "你们可以寄到国外吗？",
            "订单{order}怎么修改收货地址？",
            "{product}有其他颜色吗？",
            "可以用支付宝付款吗？",
            "{product}什么时候补货？",
            "怎么修改我的邮箱地址？",
        ],
    },
}

# Closers of a complaint: "strong" ones threaten to leave, "mild" ones ask for help.
CLOSERS: dict[str, dict[str, list[str]]] = {
    "en": {
        "strong": [
            "Honestly I'm thinking about shopping somewhere else.",
            "If this keeps happening I'll close my account.",
            "This is the last time I order from you.",
            "Not acceptable.",
            "I've been a customer for years and this is getting ridiculous.",
            "Very disappointed, tbh.",
            "Please don't send me any more promotions.",
        ],
        "mild": [
            "Could you look into it please?",
            "Thanks in advance.",
            "Any update would help.",
            "I need it by Friday.",
            "",
            "",
        ],
        "praise": ["Keep it up!", "Thanks again.", "", "Five stars from me."],
    },
    "zh": {
        "strong": [
            "说实话我在考虑换一家买了。",
            "再这样我就注销账号了。",
            "这是我最后一次在你们这里买东西。",
            "太让人失望了。",
            "我买了这么多年，这次真的太离谱了。",
            "以后别再给我发促销短信了。",
        ],
        "mild": ["麻烦帮我查一下，谢谢。", "有消息请尽快告诉我。", "谢谢。", "", ""],
        "praise": ["继续加油！", "再次感谢。", "", "五星好评。"],
    },
}

AGENT_REPLIES: dict[str, dict[str, list[str]]] = {
    "en": {
        "late_delivery": [
            "Hi {name}, I'm sorry about the delay. I've checked order {order} and the carrier expects delivery within 2 days.",
            "Sorry for the wait! I've opened an investigation with the courier for {order}.",
            "Apologies, {name}. I've reshipped your order with express delivery at no cost.",
        ],
        "refund_trouble": [
            "I've escalated your refund to our payments team; you should see it in 3-5 business days.",
            "Sorry about this, {name}. The refund for {order} was issued today.",
            "I can see the return was received. The refund is pending approval and I've flagged it as urgent.",
        ],
        "price_complaint": [
            "Thanks for letting us know. Here's a 10% code for your next order: SAVE10.",
            "Our prices follow supplier costs, but I've passed your feedback on.",
            "We offer a price adjustment within 7 days, so I've refunded the difference.",
        ],
        "product_defect": [
            "So sorry! Please send us a photo and we'll ship a replacement.",
            "I've arranged a free return and a full refund for the {product}.",
            "Apologies for that, {name}. A replacement {product} is on its way.",
        ],
        "praise": [
            "Thank you so much, {name}! We're happy you enjoyed it.",
            "That's wonderful to hear, thanks for shopping with us!",
        ],
        # One answer per question of OPENERS, in the same order.
        "question": [
            "Yes, we ship to over 40 countries; you'll see the options at checkout.",
            "You can change it under My Account > Orders until the parcel ships.",
            "The {product} comes in three colours, you can pick one on the product page.",
            "Yes, PayPal and all major cards are accepted.",
            "I've checked and the {product} will be back in stock next week.",
            "Go to My Account > Profile and click 'Change email'.",
            "Yes! Tick 'gift wrap' at checkout, it's free in December.",
            "Yes, the {product} comes with a two-year warranty.",
        ],
    },
    "zh": {
        "late_delivery": [
            "{name}您好，非常抱歉让您久等了。我查了订单{order}，快递预计两天内送达。",
            "抱歉！我已经联系快递公司调查订单{order}的情况。",
            "非常抱歉，我们已免费为您用加急快递重新发货。",
        ],
        "refund_trouble": [
            "我已将您的退款提交给财务部门，三到五个工作日内到账。",
            "抱歉给您带来不便，订单{order}的退款今天已经退回。",
            "我看到退货已经签收，退款正在审核中，我已经标记为加急。",
        ],
        "price_complaint": [
            "感谢您的反馈，这是一张九折优惠券：SAVE10。",
            "我们的价格随供应商成本调整，您的意见我已经转达。",
            "我们提供七天保价服务，差价已经退还给您。",
        ],
        "product_defect": [
            "非常抱歉！请发一张照片给我们，我们会给您寄送新的。",
            "已为您安排免费退货并全额退款。",
            "抱歉，新的{product}已经在路上了。",
        ],
        "praise": ["非常感谢您，{name}！很高兴您喜欢。", "听到这个真开心，感谢您的支持！"],
        "question": [
            "可以的，我们支持四十多个国家和地区的配送，结账时就能看到选项。",
            "发货前您可以在“我的账户 > 订单”里修改收货地址。",
            "{product}有三种颜色，可以在商品页面选择。",
            "可以的，我们支持支付宝、微信支付和银行卡。",
            "我查了一下，{product}下周会补货。",
            "请到“我的账户 > 个人资料”里点击“修改邮箱”。",
        ],
    },
}

FOLLOW_UPS: dict[str, dict[str, list[str]]] = {
    "en": {
        "resolved": ["Thanks, that helps.", "ok thank you", "Great, appreciate it.", "Perfect, thanks!"],
        "unresolved": [
            "That's what you said last time.",
            "This is not good enough.",
            "I'll believe it when I see it.",
            "Please just cancel my account.",
            "Still nothing. Forget it.",
        ],
    },
    "zh": {
        "resolved": ["好的，谢谢。", "明白了，谢谢你。", "太好了，谢谢！"],
        "unresolved": ["上次你们也是这么说的。", "这样处理我不能接受。", "等真的到了再说吧。", "请直接帮我注销账号。"],
    },
}

# Phone calls are logged by the agent as a short note.
PHONE_TOPIC: dict[str, dict[str, str]] = {
    "en": {
        "late_delivery": "a late delivery (order {order})",
        "refund_trouble": "a missing refund for order {order}",
        "price_complaint": "prices and shipping costs",
        "product_defect": "a problem with the {product}",
        "praise": "to thank the team for the {product}",
        "question": "a question about the {product}",
    },
    "zh": {
        "late_delivery": "订单{order}迟迟未送达",
        "refund_trouble": "订单{order}的退款一直没到账",
        "price_complaint": "价格和运费太高",
        "product_defect": "收到的{product}有质量问题",
        "praise": "感谢客服，对{product}很满意",
        "question": "咨询{product}的相关问题",
    },
}
PHONE_MOOD: dict[str, dict[str, list[str]]] = {
    "en": {"strong": ["very upset", "angry, mentioned leaving"], "mild": ["calm", "polite", "a bit annoyed"]},
    "zh": {"strong": ["非常不满", "很生气，提到要换平台"], "mild": ["平静", "礼貌", "有点不耐烦"]},
}
PHONE_TEMPLATE = {
    "en": "Call notes: customer called about {topic}. Customer sounded {mood}. {action}",
    "zh": "电话记录：客户来电反映{topic}。客户情绪{mood}。{action}",
}
PHONE_ACTION = {
    "en": ["Follow-up scheduled.", "Issue escalated to tier 2.", "Resolved on the call.", "Voucher offered."],
    "zh": ["已安排回访。", "已升级给二线处理。", "通话中已解决。", "已赠送优惠券。"],
}

EMOJI = {
    "complaint": ["😡", "😤", "🙄", "😞", "!!", "??"],
    "praise": ["😊", "👍", "❤️", "🎉", "🙏"],
    "question": ["🙂", "?"],
}

_KEYBOARD_NEIGHBOURS = "qwertyuiopasdfghjklzxcvbnm"


def fill(template: str, **values: object) -> str:
    return template.format(**values)


def add_typos(text: str, rng: np.random.Generator, rate: float = 0.08) -> str:
    """Swap, drop or double letters in a few words, the way people type on a phone."""
    words = text.split(" ")
    for index, word in enumerate(words):
        if len(word) < 4 or not word.isascii() or rng.random() >= rate:
            continue
        position = int(rng.integers(1, len(word) - 1))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            word = word[: position - 1] + word[position] + word[position - 1] + word[position + 1 :]
        elif kind == 1:
            word = word[:position] + word[position + 1 :]
        elif kind == 2:
            word = word[:position] + word[position] + word[position:]
        else:
            letter = _KEYBOARD_NEIGHBOURS[int(rng.integers(0, len(_KEYBOARD_NEIGHBOURS)))]
            word = word[:position] + letter + word[position + 1 :]
        words[index] = word
    return " ".join(words)


def add_noise(text: str, *, language: str, mood: str, rng: np.random.Generator) -> str:
    """Typos (English only), lower case and an emoji now and then."""
    if language == "en":
        if rng.random() < 0.3:
            text = add_typos(text, rng)
        if rng.random() < 0.15:
            text = text.lower()
    if rng.random() < 0.15:
        choices = EMOJI[mood]
        text = f"{text} {choices[int(rng.integers(0, len(choices)))]}"
    return text


def stars(rating: int, language: str) -> str:
    if language == "zh":
        return f"{rating}星。"
    return "★" * rating + "☆" * (5 - rating)
